"""CAMUS ``Info_<view>.cfg`` files: parsing, patient attributes, reference LV volumes and EF.

An Info cfg holds ``Key: value`` lines. Both releases give ``ED``, ``ES``, ``NbFrame``,
``Sex``, ``Age`` and ``ImageQuality``; the 2019 release adds the reference LV volumes and
ejection fraction ``LVedv``, ``LVesv`` (mL) and ``LVef`` (%), the 2023 release ``EF`` (%)
and ``FrameRate``.

Examples::

    >>> cfg_reference("Info_2CH.cfg", {"LVedv": "120.5", "LVesv": "60", "LVef": "50.2"})
    {'edv_ml': 120.5, 'esv_ml': 60.0, 'ef_percent': 50.2}
    >>> cfg_reference("Info_2CH.cfg", {"EF": "55"})
    {'edv_ml': None, 'esv_ml': None, 'ef_percent': 55.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from echo_vlsm.data.headers import CamusFormatError
from echo_vlsm.structures import QUALITIES

__all__ = ["CFG_KEYS", "MAX_AGE", "REFERENCE_KEYS", "REQUIRED_CFG_KEYS", "cfg_attributes",
           "cfg_reference", "parse_cfg"]

# Keys every Info_<view>.cfg must carry for a record (the rest are read when present).
REQUIRED_CFG_KEYS: tuple[str, ...] = ("Sex", "Age", "ImageQuality")
CFG_KEYS = {
    "2019": ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef"),
    "2023": ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"),
}
MAX_AGE = 120  # years: an Age above it is a typo (or a wrong field), not a patient
#: Reference values and the cfg keys they are read from, first found wins (2019, 2023).
REFERENCE_KEYS: dict[str, tuple[str, ...]] = {
    "edv_ml": ("LVedv",),
    "esv_ml": ("LVesv",),
    "ef_percent": ("LVef", "EF"),
}


def parse_cfg(path: str | Path) -> dict[str, str]:
    """Read an ``Info_<view>.cfg`` file (``Key: value`` lines) into a dict of strings.

    Blank lines and stray spaces are tolerated; any other line without a colon raises.
    """
    path = Path(path)
    if not path.is_file():
        raise CamusFormatError(path, "missing Info cfg file")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise CamusFormatError(path, f"cannot read ({exc})") from exc
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise CamusFormatError(path, f"line {i} is not 'Key: value': {line[:60]!r}")
        out[key.strip()] = value.strip()
    return out


def cfg_attributes(path: str | Path, cfg: Mapping[str, str] | None = None) -> dict:
    """Sex ("M"/"F"), age (int) and image quality ("Good"/"Medium"/"Poor") of an Info cfg."""
    cfg = parse_cfg(path) if cfg is None else cfg
    lower = {k.lower(): v for k, v in cfg.items()}
    for key in REQUIRED_CFG_KEYS:
        if key.lower() not in lower:
            raise CamusFormatError(
                path, f"missing key {key!r} (needed keys: {', '.join(REQUIRED_CFG_KEYS)})"
            )
    sex = lower["sex"].strip().upper()
    sex = {"MALE": "M", "FEMALE": "F"}.get(sex, sex)
    if sex not in ("M", "F"):
        raise CamusFormatError(path, f"Sex is {lower['sex']!r}; expected 'M' or 'F'")
    try:
        age_f = float(lower["age"])
        if not age_f.is_integer():
            raise ValueError
        age = int(age_f)
    except ValueError:
        raise CamusFormatError(
            path, f"Age is {lower['age']!r}; expected a whole number of years"
        ) from None
    if not 0 <= age <= MAX_AGE:
        raise CamusFormatError(
            path, f"Age is {lower['age']!r}; expected a whole number of years in 0..{MAX_AGE}"
        )
    quality = lower["imagequality"].strip().capitalize()
    if quality not in QUALITIES:
        raise CamusFormatError(
            path, f"ImageQuality is {lower['imagequality']!r}; expected one of {QUALITIES}"
        )
    return {"sex": sex, "age": age, "quality": quality}


def cfg_reference(path: str | Path, cfg: Mapping[str, str] | None = None) -> dict:
    """The reference EDV, ESV (mL) and EF (%) of an Info cfg: ``{"edv_ml", "esv_ml",
    "ef_percent"}``, None for a value the cfg does not give (the 2023 release gives EF only).

    Raises:
        CamusFormatError: a value that is not a positive finite number (EF at most 100),
            naming the file and the key.
    """
    cfg = parse_cfg(path) if cfg is None else cfg
    lower = {k.lower(): v for k, v in cfg.items()}
    out: dict = {}
    for name, keys in REFERENCE_KEYS.items():
        key = next((k for k in keys if k.lower() in lower), None)
        if key is None:
            out[name] = None
            continue
        text = lower[key.lower()]
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0 and (name != "ef_percent" or value <= 100)):
            limit = " and at most 100" if name == "ef_percent" else ""
            raise CamusFormatError(path, f"{key} is {text!r}; expected a positive number{limit}")
        out[name] = value
    return out
