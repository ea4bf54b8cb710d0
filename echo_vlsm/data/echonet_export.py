"""EchoNet-Dynamic into the project's dataset format (``export.export_dataset``).

Each video gives two images, its traced ED and ES frames, as apical four-chamber (4CH)
records; the label map holds the traced LV cavity (1) only: EchoNet traces no myocardium or
left atrium, so their masks (written by the export for every structure) are empty, and the
``structures`` column of ``records.csv`` says ``lv``. ``records.csv`` also carries each
video's reference values as published: ``ef`` (%), ``edv``, ``esv`` (mL), and the traced
``frame``. EchoNet publishes no pixel spacing, sex, age or image quality: those columns are
empty, so EF (single-plane discs are scale-free) is compared in absolute terms, volumes only
in relative terms, and only the prompts P0-P3 (structure, view, phase) can be made
(``check_prompt``).

Examples::

    videos = read_echonet("data/raw/echonet")
    export_echonet(videos, "data/echonet", size=512)
    check_prompt("p5")      # ValueError: p5 needs the patient's age and sex ...
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echo_vlsm.data.echonet import EchoNetVideo
from echo_vlsm.data.export import export_dataset
from echo_vlsm.dataset import read_records, write_records

__all__ = ["MISSING_ATTRIBUTES", "PROMPT_KEYS", "STRUCTURES", "EchoNetRecord", "check_prompt",
           "echonet_records", "export_echonet"]

STRUCTURES: tuple[str, ...] = ("lv",)  # the only structure EchoNet traces
PROMPT_KEYS: tuple[str, ...] = ("p0", "p1", "p2", "p3")  # empty, structure, view, phase
# What each further prompt needs that EchoNet-Dynamic does not publish.
MISSING_ATTRIBUTES: dict[str, str] = {
    "p4": "the patient's sex",
    "p5": "the patient's age and sex",
    "p6": "the image quality (and the patient's age and sex)",
    "p7": "the image quality (and the patient's age and sex)",
}


def check_prompt(key: str) -> str:
    """``key`` if EchoNet's attributes can make that prompt, else a ValueError naming the
    prompt and the attribute the dataset lacks.

    >>> check_prompt("p3")
    'p3'
    """
    key = str(key).lower()
    if key in PROMPT_KEYS:
        return key
    if key in MISSING_ATTRIBUTES:
        raise ValueError(
            f"prompt {key} needs {MISSING_ATTRIBUTES[key]}, which EchoNet-Dynamic does not "
            f"publish; prompts this dataset can make: {', '.join(PROMPT_KEYS)}")
    raise ValueError(f"unknown prompt {key!r}; EchoNet-Dynamic can make {PROMPT_KEYS}")


@dataclass(frozen=True)
class EchoNetRecord:
    """One exported image of EchoNet: a video's traced ED or ES frame, apical 4CH.

    Has the attributes the export contract reads (``stem``, ``patient``, ``view``, ``phase``,
    ``split``, ``image_path``, ``label_path``, ``spacing``, ``sex``, ``age``, ``quality``,
    ``load()``); EchoNet publishes no spacing, sex, age or quality, so those are unknown.
    """

    video: EchoNetVideo
    phase: str  # "ED" | "ES"
    view: str = "4CH"
    spacing: tuple[float, float] = (math.nan, math.nan)
    sex: str | None = None
    age: int | None = None
    quality: str | None = None

    @property
    def patient(self) -> str:
        return self.video.name

    @property
    def split(self) -> str:
        return self.video.split

    @property
    def stem(self) -> str:
        return f"{self.video.name}_{self.view}_{self.phase}"

    @property
    def image_path(self) -> Path:
        return self.video.path

    @property
    def label_path(self) -> Path:
        return self.video.tracings_path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image, label)``: the traced frame (H, W) uint8 and the LV (1) on 0, uint8."""
        image = self.video.frame(self.phase)
        trace = self.video.trace(self.phase)
        return image, trace.mask(*image.shape).astype(np.uint8)


def echonet_records(videos: list[EchoNetVideo]) -> list[EchoNetRecord]:
    """The images of the export: each video's ED, then its ES frame."""
    return [EchoNetRecord(v, phase) for v in videos for phase in ("ED", "ES")]


def export_echonet(videos: list[EchoNetVideo], out_dir: str | os.PathLike, size: int = 512,
                   workers: int | None = None) -> Path:
    """Export ``videos`` (``read_echonet``) as a dataset folder through ``export_dataset``
    (``size`` x ``size`` PNGs, label maps, masks, ``records.csv``; skipping unchanged
    images on a second run), then add the columns ``structures`` (``lv``), ``ef``, ``edv``,
    ``esv`` and ``frame`` to ``records.csv``. Returns ``out_dir``."""
    records = echonet_records(videos)
    out = export_dataset(records, out_dir, size=size, workers=workers)
    table = read_records(out)
    by_stem = {r.stem: r for r in records}
    extra = {
        "structures": [" ".join(STRUCTURES)] * len(table),
        "ef": [by_stem[s].video.ef for s in table["stem"]],
        "edv": [by_stem[s].video.edv for s in table["stem"]],
        "esv": [by_stem[s].video.esv for s in table["stem"]],
        "frame": [by_stem[s].video.trace(by_stem[s].phase).frame for s in table["stem"]],
    }
    for col, values in extra.items():
        table[col] = values
    write_records(table, out)
    return out
