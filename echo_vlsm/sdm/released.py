"""Import the study's released synthetic set (SDM-CAMUS, Echo from Noise; Zenodo 7921055).

The release holds one folder per view and phase, each with images and 5-class annotations::

    <root>/<view>/images/<split>/<name>.png          e.g. 2CH_ED/images/training/...
    <root>/<view>/annotations/<split>/<name>.png     0 outside, 1 LV, 2 tissue, 3 myo, 4 LA

``<view>`` is ``2CH_ED``, ``2CH_ES``, ``4CH_ED`` or ``4CH_ES`` (a suffix such as
``_augmented`` is allowed); ``<split>`` is ``training`` / ``validation`` (also ``train`` /
``val``). The release's ``testing`` folders hold copies of the real CAMUS test images (the
study tests on real data only), not synthetic ones: they are skipped; export the real CAMUS
test split instead.

Names and records. Echo from Noise names a sample after its source label map and the number
of the perturbation, e.g. ``patient0051_2CH_ED_training_3.png``; the importer takes the
patient (``patient\\d+``) from the name, view and phase from the name or else from the
folder, and the number from a trailing ``_<k>`` (0 when absent). The stem becomes
``patient0051_2CH_ED_s3`` (as ``synthesize`` names its own samples), ``source_stem``
``patient0051_2CH_ED``. Sex and age come from the matching real image when a real exported
dataset is given (``real_dir``), else stay empty; quality is always empty; source size is the
released image's, spacing unknown.

Labels map to the project's: 0 and 2 (outside, tissue) -> 0; 1 -> 1 (LV); 3 -> 2
(myocardium); 4 -> 3 (LA). Any other value is refused with an error naming the file.
An annotation in CAMUS's own coding (0 background, 1 LV, 2 myocardium, 3 LA) is told apart
(:func:`annotation_coding`: value 4 present means the release's coding; else class 2 covering
most of the labelled fan means tissue, a small share means myocardium) and imported as such,
its 5-class map rebuilt from the image's sector; a file that fits neither is refused.

Sex and age are joined on (split, source stem): the 2019 CAMUS release numbers its testing
patients 0001-0050 again, so ``patient0001_2CH_ED`` is both a validation and a test image.

Examples::

    import_released("data/raw/sdm-camus", "data/camus-synthetic", real_dir="data/camus")

    >>> parse_name("patient0051_2CH_ED_training_3", "2CH_ED", "x.png")
    {'patient': 'patient0051', 'view': '2CH', 'phase': 'ED', 'k': 3}
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from echo_vlsm.dataset import (
    RECORDS_FILE,
    image_path,
    label_path,
    mask_path,
    read_records,
    write_records,
)
from echo_vlsm.errors import PathError
from echo_vlsm.imaging import resize_image, resize_label
from echo_vlsm.io import read_png, write_png
from echo_vlsm.sdm.labels import map_path, resize_map, sector_mask, to_sdm_map
from echo_vlsm.structures import LABELS, STRUCTURES

SPLIT_NAMES = {"training": "train", "train": "train", "validation": "val", "val": "val"}
SKIPPED_SPLITS = ("testing", "test")
ALLOWED_VALUES = (0, 1, 2, 3, 4)
RELEASED_TO_CAMUS = np.array([0, 1, 0, 2, 3], np.uint8)
_VIEW_RE = re.compile(r"(?:^|_)(2CH|4CH)_(ED|ES)(?:_|$)")
_PATIENT_RE = re.compile(r"(patient\d+)")
_K_RE = re.compile(r"_(\d+)$")


class ReleasedFormatError(PathError):
    """A file of the released set is missing or not as expected; the message names it."""


def parse_name(name: str, folder: str, path) -> dict:
    """patient, view, phase, k of a released sample's file name (folder gives view/phase
    when the name does not)."""
    patient = _PATIENT_RE.search(name)
    if patient is None:
        raise ReleasedFormatError(
            path, "cannot find the patient in the name; expected names like "
            "'patient0051_2CH_ED_training_3.png'"
        )
    vp = _VIEW_RE.search(name) or _VIEW_RE.search(folder)
    if vp is None:
        raise ReleasedFormatError(
            path, "cannot tell view and phase from the name or the folder; expected a folder "
            "such as '2CH_ED' or a name containing '_2CH_ED_'"
        )
    k = _K_RE.search(name)
    return {"patient": patient.group(1), "view": vp.group(1), "phase": vp.group(2),
            "k": int(k.group(1)) if k else 0}


def scan_released(root) -> list[dict]:
    """Every synthetic sample of a released tree: image and annotation paths, split, parsed
    name. Raises ``ReleasedFormatError`` on missing annotations or unknown split folders."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; download the SDM-CAMUS release "
                                "(Zenodo record 7921055) and unpack it there")
    items = []
    for view_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        img_root = view_dir / "images"
        if not img_root.is_dir():
            continue
        for split_dir in sorted(p for p in img_root.iterdir() if p.is_dir()):
            if split_dir.name in SKIPPED_SPLITS:
                continue
            if split_dir.name not in SPLIT_NAMES:
                raise ReleasedFormatError(
                    split_dir, f"unknown split folder; expected one of {sorted(SPLIT_NAMES)} "
                    f"(or {list(SKIPPED_SPLITS)}, skipped)"
                )
            for img in sorted(split_dir.glob("*.png")):
                ann = view_dir / "annotations" / split_dir.name / img.name
                if not ann.is_file():
                    raise ReleasedFormatError(ann, f"missing: the annotation of {img}")
                info = parse_name(img.stem, view_dir.name, img)
                items.append({**info, "split": SPLIT_NAMES[split_dir.name],
                              "image": img, "annotation": ann})
    if not items:
        raise ReleasedFormatError(
            root, "holds no released samples; expected <view>/images/<split>/<name>.png "
            "with <view> like 2CH_ED and <split> training or validation"
        )
    return items


#: Share of the labelled pixels (values > 0) taken by class 2 at or above which an annotation
#: without value 4 is read in the release's coding (2 = tissue, most of the fan), and at or
#: below which it may be CAMUS's (2 = myocardium, a wall).
TISSUE_SHARE = 0.6
MYOCARDIUM_SHARE = 0.5
#: Share of the image's sector that the labelled pixels cover: the release's coding labels
#: the whole fan (0 is outside it), CAMUS's only the structures.
FAN_COVERED, FAN_PARTLY = 0.9, 0.75


def annotation_coding(annotation: np.ndarray, path, image: np.ndarray | None = None) -> str:
    """``"sdm"`` (0 outside, 1 LV, 2 tissue, 3 myocardium, 4 LA: the release's) or
    ``"camus"`` (0 background, 1 LV, 2 myocardium, 3 LA) for an annotation; refuses values
    outside 0..4 and a map that fits neither coding, naming ``path``.

    Value 4 means the release's coding. Without it, class 2 covering at least
    :data:`TISSUE_SHARE` of the labelled pixels is tissue (the release's); with ``image``,
    labels covering the image's whole sector (:data:`FAN_COVERED`) are the release's too, and
    CAMUS's coding needs class 2 at most :data:`MYOCARDIUM_SHARE` of the labels, an LV, and
    (with ``image``) labels leaving part of the sector (at most :data:`FAN_PARTLY`) unlabelled.

    Examples::

        >>> a = np.zeros((10, 10), np.uint8); a[2:9, 2:9] = 2; a[4:6, 4:6] = 1; a[7, 3:6] = 3
        >>> annotation_coding(a, "x.png")  # no 4, but class 2 fills most of the fan
        'sdm'
        >>> b = np.zeros((10, 10), np.uint8); b[3:6, 3:6] = 1; b[2, 2:7] = 2; b[7:9, 3:6] = 3
        >>> annotation_coding(b, "y.png")
        'camus'
    """
    values = np.unique(annotation)
    bad = [int(v) for v in values if int(v) not in ALLOWED_VALUES]
    if bad:
        raise ReleasedFormatError(
            path, f"unexpected label values {bad} (found {values.tolist()}); a released "
            "annotation holds 0 outside, 1 LV, 2 tissue, 3 myocardium, 4 LA"
        )
    if 4 in values:
        return "sdm"
    labelled = annotation > 0
    if not labelled.any():
        return "sdm"  # all outside: the same in either coding
    share = float(np.count_nonzero(annotation == 2)) / np.count_nonzero(labelled)
    if share >= TISSUE_SHARE:
        return "sdm"
    cover = None
    if image is not None and image.shape == annotation.shape:
        sector = sector_mask(image)
        if sector.any():
            cover = float(np.count_nonzero(labelled & sector)) / np.count_nonzero(sector)
    if cover is not None and cover >= FAN_COVERED:
        return "sdm"
    if share <= MYOCARDIUM_SHARE and 1 in values and (cover is None or cover <= FAN_PARTLY):
        return "camus"
    fan = f", labels cover {cover:.0%} of the image's sector" if cover is not None else ""
    raise ReleasedFormatError(
        path, f"label coding ambiguous: values {values.tolist()} without 4, class 2 covers "
        f"{share:.0%} of the labelled pixels{fan} (the release's coding, 2 = tissue: >= "
        f"{TISSUE_SHARE:.0%}, or the whole sector labelled; CAMUS's, 2 = myocardium: <= "
        f"{MYOCARDIUM_SHARE:.0%} with an LV and part of the sector unlabelled); check the "
        "file and recode it to 0 outside, 1 LV, 2 tissue, 3 myocardium, 4 LA"
    )


def released_label(annotation: np.ndarray, path, image: np.ndarray | None = None) -> np.ndarray:
    """The project's label map (0..3) from a released annotation in either coding (see
    :func:`annotation_coding`); refuses other values and ambiguous maps."""
    if annotation_coding(annotation, path, image) == "camus":
        return annotation.astype(np.uint8)
    return RELEASED_TO_CAMUS[annotation]


def _assign_stems(items: list[dict]) -> None:
    """Give each sample its stem (``<patient>_<view>_<phase>_s<k>``) and ``source_stem``.

    Raises:
        ReleasedFormatError: two samples of a split give the same stem.
    """
    seen: dict[tuple[str, str], Path] = {}
    for it in items:
        it["source_stem"] = f"{it['patient']}_{it['view']}_{it['phase']}"
        it["stem"] = f"{it['source_stem']}_s{it['k']}"
        key = (it["split"], it["stem"])
        if key in seen:
            raise ReleasedFormatError(it["image"], f"gives the stem {it['stem']} that "
                                      f"{seen[key]} gives too; names must be unique")
        seen[key] = it["image"]


def _write_sample(out: Path, it: dict, size: int) -> tuple[int, int]:
    """Write one sample's masks, 5-class map, label map and (last, marking it done) image at
    ``size`` px; returns the released image's (height, width)."""
    split, stem = it["split"], it["stem"]
    image = read_png(it["image"])
    annotation = read_png(it["annotation"])
    if image.shape != annotation.shape:
        raise ReleasedFormatError(it["annotation"], f"shape {annotation.shape} differs "
                                  f"from its image's {image.shape}")
    if annotation_coding(annotation, it["annotation"], image) == "camus":
        full = annotation.astype(np.uint8)
        sdm_map = to_sdm_map(full, sector_mask(image))
    else:
        full, sdm_map = RELEASED_TO_CAMUS[annotation], annotation
    label = resize_label(full, size)
    for s in STRUCTURES:
        write_png(mask_path(out, s, split, stem),
                  np.where(label == LABELS[s], 255, 0).astype(np.uint8))
    write_png(map_path(out, split, stem), resize_map(sdm_map, size))
    write_png(label_path(out, split, stem), label)
    write_png(image_path(out, split, stem), resize_image(image, size))
    return image.shape


def _record(it: dict, source_size: tuple[int, int], real: dict) -> dict:
    """The ``records.csv`` row of a sample; sex and age from its real image when known."""
    h, w = source_size
    return {
        "stem": it["stem"], "patient": it["patient"], "view": it["view"],
        "phase": it["phase"], "split": it["split"], "sex": real.get("sex", ""),
        "age": real.get("age", pd.NA), "quality": "", "source_height": h, "source_width": w,
        "spacing_y": "", "spacing_x": "", "source_stem": it["source_stem"],
    }


def import_released(src_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    real_dir: str | os.PathLike | None = None, size: int = 512,
                    max_per_split: int | None = None, progress: bool = True) -> Path:
    """Convert the released SDM-CAMUS tree ``src_dir`` into an exported dataset ``out_dir``.

    Writes images, labels, masks, ``sdm_maps`` and ``records.csv`` at ``size`` px; resumable
    (samples whose image exists are skipped, ``records.csv`` is written last).

    Args:
        real_dir: an exported real CAMUS dataset to take sex and age from.
        max_per_split: import only the first samples of each split (a fast-dev-run);
            samples imported before and no longer chosen stay on disk but leave
            ``records.csv``.

    Returns:
        ``out_dir``.

    Raises:
        FileNotFoundError: ``src_dir`` does not exist.
        ReleasedFormatError: a file of the release is missing or not as expected.
    """
    out = Path(out_dir)
    items = scan_released(src_dir)
    if max_per_split is not None:
        if int(max_per_split) < 1:
            raise ValueError(f"max_per_split must be >= 1, got {max_per_split}")
        counts: dict[str, int] = {}
        chosen = []
        for it in items:
            counts[it["split"]] = counts.get(it["split"], 0) + 1
            if counts[it["split"]] <= int(max_per_split):
                chosen.append(it)
        items = chosen
    _assign_stems(items)
    facts = real_facts(real_dir) if real_dir is not None else {}
    out.mkdir(parents=True, exist_ok=True)
    (out / RECORDS_FILE).unlink(missing_ok=True)
    rows = []
    for it in tqdm(items, desc="import SDM-CAMUS", unit="img", disable=None if progress else True):
        if image_path(out, it["split"], it["stem"]).is_file():
            source_size = _png_size(it["image"])
        else:
            source_size = _write_sample(out, it, size)
        rows.append(_record(it, source_size, _facts_of(facts, it)))
    write_records(rows, out)
    return out


def real_facts(real_dir: str | os.PathLike) -> dict:
    """The records of an exported real dataset keyed by ``(split, stem)``, plus by ``stem``
    alone where the stem names one image only (``(None, stem)``)."""
    rows = read_records(real_dir).to_dict("records")
    facts = {(r["split"], r["stem"]): r for r in rows}
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["stem"]] = counts.get(r["stem"], 0) + 1
    facts.update({(None, r["stem"]): r for r in rows if counts[r["stem"]] == 1})
    return facts


def _facts_of(facts: dict, it: dict) -> dict:
    """The real record a sample was made from: same split and source stem; else (the real
    export split otherwise) the one real image of that stem; else none."""
    return facts.get((it["split"], it["source_stem"])) or facts.get((None, it["source_stem"]),
                                                                     {})


def _png_size(path: os.PathLike) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width
