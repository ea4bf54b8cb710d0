"""Measure one patient: EDV, ESV and EF from the LV masks a trained model draws (issue 21).

``measure(model, patient)`` segments the LV cavity in the patient's four apical images
(2CH and 4CH at ED and ES) with ``segment`` and measures the masks at each image's own size
and pixel spacing with ``echo_vlsm.clinical.biplane_volumes`` (CAMUS disc height), exactly
as ``clinical.csv`` measures a run's test patients.

``patient`` is either

- a CAMUS patient folder (2019 ``.mhd`` or 2023 ``.nii.gz``/``.nii``): the images
  ``<patient>_<view>_<phase>.<ext>``, their spacing from the headers, the prompt's sex, age
  and image quality from ``Info_2CH.cfg`` / ``Info_4CH.cfg`` (and the reference values the
  cfg gives, reported beside the measurement); or
- four image files whose names hold the view and phase (``..._2CH_ED.png``, ...): the
  spacing from the header of a CAMUS image, else ``spacing`` (required for PNG/JPEG/DICOM,
  which carry none here); attributes from ``attributes``.

The prompt is the model's training key (or ``prompt``): a key p4-p7 needs what the images
do not carry (P4-P6: sex, age, quality; P7 also the shape word, which at inference has no
ground truth to come from) and the error says which attribute to pass. Bad input raises
``MeasureError`` naming the file or folder.

Examples::

    m = measure("runs/demo/clipseg_real_trained_p3", "data/raw/camus/training/patient0001")
    m.edv_ml, m.esv_ml, m.ef_percent, m.reason
    m.as_dict()  # what ``echo-vlsm measure --out`` writes as JSON
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echo_vlsm.clinical import Volumes, biplane_volumes
from echo_vlsm.data.camus_cfg import cfg_attributes, cfg_reference, parse_cfg
from echo_vlsm.data.headers import CamusFormatError, read_header
from echo_vlsm.errors import PathError
from echo_vlsm.grid import PROMPT_KEYS
from echo_vlsm.inference.loading import LoadedModel, load_model
from echo_vlsm.inference.segment import segment
from echo_vlsm.prompts.templates import required_attributes
from echo_vlsm.structures import PHASES, VIEWS

__all__ = ["IMAGE_NAMES", "MeasureError", "Measurement", "PatientImages", "measure",
           "patient_images"]

#: The four images of a patient, in ``biplane_volumes``' order.
IMAGE_NAMES: tuple[str, ...] = tuple(f"{v}_{p}" for v in VIEWS for p in PHASES)
_CAMUS_EXTS = (".mhd", ".nii.gz", ".nii")
_NAME_RE = re.compile(r"(?:^|[^A-Za-z0-9])([24]CH)_(ED|ES)(?:$|[^A-Za-z0-9])", re.IGNORECASE)
#: Attributes a prompt key can take from the images or their cfg files.
_FROM_CFG = ("sex", "age", "quality")


class MeasureError(PathError):
    """A patient that cannot be measured as given: the message names the file and what to
    do."""


@dataclass(frozen=True)
class PatientImages:
    """A patient's four images by name (``2CH_ED``, ...), each image's pixel size
    ``(row_mm, col_mm)``, the attributes read for its view (sex, age, quality) and the
    reference values of its cfg (empty for loose images); ``folder``: read from a CAMUS
    patient folder (``source``), else from image files."""

    source: Path
    patient: str
    paths: dict[str, Path]
    spacing: dict[str, tuple[float, float]]
    folder: bool
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """What ``measure`` gives: the volumes (``Volumes``), the prompt text of each image, the
    images measured and the reference values a CAMUS folder carries."""

    images: PatientImages
    prompt: str
    texts: dict[str, str]
    volumes: Volumes
    model: str

    @property
    def edv_ml(self) -> float:
        return self.volumes.edv_ml

    @property
    def esv_ml(self) -> float:
        return self.volumes.esv_ml

    @property
    def ef_percent(self) -> float:
        return self.volumes.ef_percent

    @property
    def reason(self) -> str | None:
        return self.volumes.reason

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record (NaN as None)."""
        axes = self.volumes.long_axes_mm
        return {
            "model": self.model, "patient": self.images.patient,
            "source": str(self.images.source), "prompt": self.prompt,
            "edv_ml": _number(self.edv_ml), "esv_ml": _number(self.esv_ml),
            "ef_percent": _number(self.ef_percent), "reason": self.reason,
            "disc_height": self.volumes.disc_height,
            "images": {n: {"path": str(self.images.paths[n]),
                           "spacing_mm": list(self.images.spacing[n]),
                           "prompt_text": self.texts[n], "long_axis_mm": _number(axes[n])}
                       for n in IMAGE_NAMES},
            "reference": {k: _number(v) for k, v in self.images.reference.items()},
        }


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# -- the images -----------------------------------------------------------------------------
def _camus_file(folder: Path, name: str) -> Path:
    """``<folder>/<patient>_<name>.<ext>`` (never a ``_gt`` label map)."""
    stem = f"{folder.name}_{name}"
    found = [folder / f"{stem}{ext}" for ext in _CAMUS_EXTS if (folder / f"{stem}{ext}").is_file()]
    if not found:
        ext = next((e for e in _CAMUS_EXTS for n in IMAGE_NAMES
                    if (folder / f"{folder.name}_{n}{e}").is_file()), _CAMUS_EXTS[0])
        raise MeasureError(folder / f"{stem}{ext}", f"missing: the patient's {name} image "
                           f"(a CAMUS patient folder holds <folder name>_<view>_<phase> "
                           f"with one of {', '.join(_CAMUS_EXTS)})")
    if len(found) > 1:
        raise MeasureError(found[1], f"a second {name} image beside {found[0].name}; "
                                     "keep one")
    return found[0]


def _header_spacing(path: Path) -> tuple[float, float]:
    try:
        return read_header(path)[1]
    except CamusFormatError as exc:
        raise MeasureError(exc.path, exc.problem) from None


def _folder_images(folder: Path) -> PatientImages:
    """A CAMUS patient folder's images, spacings, cfg attributes and reference values."""
    paths = {n: _camus_file(folder, n) for n in IMAGE_NAMES}
    attributes: dict[str, dict[str, Any]] = {}
    reference: dict[str, float | None] = {}
    for view in VIEWS:
        cfg_path = folder / f"Info_{view}.cfg"
        if not cfg_path.is_file():
            continue  # the attributes are then needed from --attr (checked with the prompt)
        try:
            cfg = parse_cfg(cfg_path)
            attributes[view] = cfg_attributes(cfg_path, cfg)
            if not reference:
                reference = cfg_reference(cfg_path, cfg)
        except CamusFormatError as exc:
            raise MeasureError(exc.path, exc.problem) from None
    spacing = {n: _header_spacing(p) for n, p in paths.items()}
    return PatientImages(folder, folder.name, paths, spacing, True, attributes, reference)


def _image_name(path: Path) -> str:
    found = {f"{m.group(1).upper()}_{m.group(2).upper()}" for m in _NAME_RE.finditer(path.name)}
    if len(found) != 1:
        raise MeasureError(path, "the file name does not say which image it is: name it with "
                                 f"one of {', '.join(IMAGE_NAMES)} (e.g. patient1_2CH_ED.png)")
    return found.pop()


def _loose_images(files: Sequence[Path], spacing: tuple[float, float] | None) -> PatientImages:
    """Four image files named by view and phase."""
    paths: dict[str, Path] = {}
    for path in files:
        if not path.is_file():
            raise MeasureError(path, "no such file")
        name = _image_name(path)
        if name in paths:
            raise MeasureError(path, f"a second {name} image beside {paths[name]}")
        paths[name] = path
    missing = [n for n in IMAGE_NAMES if n not in paths]
    if missing:
        raise MeasureError(files[0].parent, f"missing the {', '.join(missing)} image(s): "
                           f"give four images, one per {', '.join(IMAGE_NAMES)}")
    spacings = {}
    for name, path in paths.items():
        if path.name.lower().endswith(_CAMUS_EXTS):
            spacings[name] = _header_spacing(path)
        elif spacing is not None:
            spacings[name] = spacing
        else:
            raise MeasureError(path, "no pixel spacing in this file; pass --spacing ROW_MM,COL_MM "
                                     "(the size of one pixel, e.g. 0.3,0.3)")
    first = paths[IMAGE_NAMES[0]]
    match = _NAME_RE.search(first.name)
    patient = first.name[:match.start()].strip("_-. ") if match else ""
    return PatientImages(first.parent, patient or first.parent.name, paths, spacings, False)


def patient_images(patient: str | os.PathLike | Sequence[str | os.PathLike],
                   spacing: tuple[float, float] | None = None) -> PatientImages:
    """The four images of a patient: a CAMUS patient folder, or four files named by view and
    phase (see the module docstring).

    Raises:
        MeasureError: a missing image, view or phase, an image named twice, an image without
            spacing (and no ``spacing``), a bad cfg or header; naming the file.
    """
    items = [patient] if isinstance(patient, (str, os.PathLike)) else list(patient)
    if not items:
        raise ValueError("no patient given: a CAMUS patient folder or four images")
    paths = [Path(p) for p in items]
    if len(paths) == 1 and paths[0].is_dir():
        return _folder_images(paths[0])
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise MeasureError(folders[0], "a folder among image files: give one CAMUS patient "
                                       "folder, or four image files")
    return _loose_images(paths, spacing)


# -- the prompt -----------------------------------------------------------------------------
def _prompt_key(prompt: str | None, loaded: LoadedModel) -> str:
    """``prompt`` (a key or a text), else the key the model was trained with."""
    if prompt is not None:
        return prompt.strip()
    if loaded.prompt not in PROMPT_KEYS:
        raise MeasureError(loaded.source, f"trained with prompt {loaded.prompt!r}, which is no "
                                          f"key {PROMPT_KEYS[0]}..{PROMPT_KEYS[-1]}: pass "
                                          "--prompt (a key or a text)")
    return str(loaded.prompt)


def _attributes(images: PatientImages, key: str, extra: Mapping[str, Any],
                name: str) -> dict[str, Any] | None:
    """The attributes of image ``name`` for prompt ``key`` (None for a free text)."""
    if key.lower() not in PROMPT_KEYS:
        return None
    view, phase = name.split("_")
    attrs: dict[str, Any] = {"structure": "lv", "view": view, "phase": phase,
                             **images.attributes.get(view, {}), **extra}
    missing = [a for a in required_attributes(key.lower()) if attrs.get(a) is None]
    if not missing:
        return attrs
    hint = (" (shape: the LV's shape word, one of circle, oval, triangle, square, rectangle; "
            "at inference there is no ground-truth mask to take it from)"
            if "shape" in missing else "")
    needs = f"prompt {key} needs {', '.join(missing)}"
    if images.folder and view in images.attributes:
        where = images.source / f"Info_{view}.cfg"
        text = f"{needs}, which this cfg does not give"
    elif images.folder:
        where = images.source / f"Info_{view}.cfg"
        text = f"{needs}; the patient folder has no Info_{view}.cfg to take them from"
    else:
        where, text = images.paths[name], f"{needs}, which an image file does not carry"
    flags = " ".join(f"--attr {a}=..." for a in missing)
    raise MeasureError(where, f"{text}: pass {flags}{hint}")


def _view_spacing(images: PatientImages, view: str) -> tuple[float, float]:
    """The one pixel size of a view's ED and ES images (``biplane_volumes`` takes one)."""
    ed, es = images.spacing[f"{view}_ED"], images.spacing[f"{view}_ES"]
    if any(abs(a - b) > 1e-6 * max(a, b) for a, b in zip(ed, es, strict=True)):
        raise MeasureError(images.paths[f"{view}_ES"],
                           f"pixel spacing {es} differs from the {view}_ED image's {ed}; the "
                           "two images of a view come from one recording")
    return ed


def measure(model: Any, patient: str | os.PathLike | Sequence[str | os.PathLike], *,
            prompt: str | None = None, attributes: Mapping[str, Any] | None = None,
            spacing: tuple[float, float] | None = None, phrasing: int = 0,
            device: str | None = None) -> Measurement:
    """EDV, ESV and EF of one patient from the LV masks ``model`` draws.

    Args:
        model: a run folder, an exported model folder, a built model or a ``LoadedModel``.
        patient: a CAMUS patient folder, or four image files named by view and phase.
        prompt: a key p0..p7 or a text (default: the key the model was trained with).
        attributes: prompt attributes beyond what the images give (sex, age, quality,
            shape); they override the cfg's.
        spacing: ``(row_mm, col_mm)`` for images that carry none (PNG, JPEG, DICOM).
        phrasing: which of a key's two phrasings (0 or 1).

    Raises:
        MeasureError: bad input, naming the file (see ``patient_images``), or a prompt key
            that needs an attribute nobody gave.
    """
    images = patient_images(patient, spacing)
    for view in VIEWS:
        _view_spacing(images, view)
    loaded = load_model(model, device=device)
    key = _prompt_key(prompt, loaded)
    extra = dict(attributes or {})
    attrs = {n: _attributes(images, key, extra, n) for n in IMAGE_NAMES}  # all checked first
    masks, texts = {}, {}
    for name in IMAGE_NAMES:
        result = segment(loaded, images.paths[name], key, attributes=attrs[name],
                         phrasing=phrasing)
        masks[name], texts[name] = result.mask, result.prompt
    volumes = biplane_volumes(masks["2CH_ED"], masks["2CH_ES"], masks["4CH_ED"],
                              masks["4CH_ES"], _view_spacing(images, "2CH"),
                              _view_spacing(images, "4CH"))
    return Measurement(images, key, texts, volumes, loaded.source)
