"""Build the synthetic dataset (Echo from Noise's recipe) and measure its fidelity.

``synthesize`` takes each real image of the chosen splits, builds its 5-class SDM map
(sector from the image), makes ``n_per_map`` new maps from it (``perturb``), samples one
image per new map with a trained SDM, and writes everything in the exported layout::

    <out>/images/<split>/<stem>_s<k>.png          upsampled from the SDM's size
    <out>/labels/<split>/<stem>_s<k>.png          0 bg, 1 LV, 2 myocardium, 3 LA
    <out>/masks/<structure>/<split>/<stem>_s<k>.png
    <out>/sdm_maps/<split>/<stem>_s<k>.png        the 5-class map the image was sampled from
    <out>/records.csv                             source's view, phase, sex, age, split;
                                                  quality empty; ``source_stem``
    <out>/synthesis.json                          sampler settings and the SDM used

``k`` runs 0..n-1 (the released set's numbering). Maps and images are seeded per image
(seed, source stem, k), so an interrupted run resumes where it stopped (done images are
skipped) and gives the same images as an uninterrupted one. ``records.csv`` is written last:
its presence marks a complete dataset.

``fidelity`` measures what the issue asks of synthetic images: the LV cavity darker than the
myocardium, nothing bright outside the sector.
"""

from __future__ import annotations

import json
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from echo_vlsm.dataset import (
    RECORDS_FILE,
    file_names,
    image_path,
    label_path,
    mask_path,
    read_records,
    write_records,
)
from echo_vlsm.errors import PathError
from echo_vlsm.imaging import resize_image
from echo_vlsm.io import clean_temp_files, read_png, write_json_atomic, write_png
from echo_vlsm.sdm.diffusion import NULL_VIEW_PHASE, SDM, VIEW_PHASE, load_sdm
from echo_vlsm.sdm.labels import (
    LV,
    MYO,
    OUTSIDE,
    map_name,
    map_path,
    resize_map,
    sector_mask,
    to_camus_label,
    to_sdm_map,
)
from echo_vlsm.sdm.perturb import perturb_map
from echo_vlsm.structures import LABELS, SPLITS, STRUCTURES


def synthetic_dir_for(real_dir) -> Path:
    """``data/camus`` -> ``data/camus-synthetic``."""
    real_dir = Path(real_dir)
    return real_dir.with_name(f"{real_dir.name}-synthetic")


def real_sdm_map(dataset_dir, split: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, 5-class SDM map) of one image of an exported dataset."""
    img = read_png(image_path(dataset_dir, split, stem))
    lbl_file = label_path(dataset_dir, split, stem)
    lbl = read_png(lbl_file)
    if img.shape != lbl.shape:
        raise PathError(lbl_file, f"shape {lbl.shape} differs from its image's {img.shape}")
    try:
        return img, to_sdm_map(lbl, sector_mask(img))
    except ValueError as exc:
        raise PathError(lbl_file, str(exc)) from exc


def _seed(seed: int, stem: str, k: int) -> list[int]:
    return [int(seed), zlib.crc32(stem.encode()), int(k)]


SETTINGS_FILE = "synthesis.json"
_SAMPLE_DIRS = ("images", "labels", "masks", "sdm_maps")


def _read_settings(out: Path) -> dict | None:
    try:
        return json.loads((out / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _remove_samples(out: Path) -> None:
    """Every synthetic sample of a folder, with its records and settings."""
    for name in _SAMPLE_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (RECORDS_FILE, SETTINGS_FILE):
        (out / name).unlink(missing_ok=True)


def _remove_unlisted(out: Path, keep: set[tuple[str, str]]) -> None:
    """Samples this synthesis no longer makes (fewer maps or images per map than before)."""
    for name in _SAMPLE_DIRS:
        for png in (out / name).rglob("*.png") if (out / name).is_dir() else []:
            if (png.parent.name, png.stem) not in keep:
                png.unlink()


def _outputs(split: str, stem: str) -> list[str]:
    """Every file of one synthetic sample: the exported ones and its 5-class map."""
    return [*file_names(split, stem), map_name(split, stem)]


def _write_one(out: Path, split: str, stem: str, image: np.ndarray, sdm_map: np.ndarray,
               size: int) -> None:
    sdm_big = resize_map(sdm_map, size)
    label = to_camus_label(sdm_big)
    # masks, map and label first: the image marks the sample as done
    for structure in STRUCTURES:
        write_png(mask_path(out, structure, split, stem),
                  np.where(label == LABELS[structure], 255, 0).astype(np.uint8))
    write_png(map_path(out, split, stem), sdm_big)
    write_png(label_path(out, split, stem), label)
    write_png(image_path(out, split, stem), resize_image(image, size))


def _load_sdm(sdm, device: str):
    if isinstance(sdm, SDM):
        return sdm
    return load_sdm(sdm, device=device)


def synthesize(
    sdm,
    real_dir,
    out_dir=None,
    *,
    n_per_map: int = 5,
    sampler: str = "dpm++",
    steps: int | None = 20,
    guidance_scale: float = 1.0,
    splits: Sequence[str] = ("train", "val"),
    max_maps: int | None = None,
    max_per_split: int | None = None,
    size: int = 512,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Write ``<real_dir>-synthetic`` (or ``out_dir``): ``n_per_map`` synthetic images per
    real label map of ``splits`` (the first ``max_maps`` maps when given, and at most
    ``max_per_split`` of each split: a fast-dev-run), sampled by ``sdm`` (an ``SDM``, a run
    directory or a checkpoint) from perturbed maps. Returns the folder."""
    real_dir = Path(real_dir)
    out = Path(out_dir) if out_dir is not None else synthetic_dir_for(real_dir)
    if out.resolve() == real_dir.resolve():
        raise ValueError(f"{out}: the synthetic dataset must not overwrite the real one")
    if n_per_map < 1:
        raise ValueError(f"n_per_map must be >= 1, got {n_per_map}")
    rows = _source_rows(real_dir, splits, max_maps, max_per_split)
    items = [(row, k, f"{row['stem']}_s{k}") for row in rows.to_dict("records")
             for k in range(n_per_map)]
    out.mkdir(parents=True, exist_ok=True)
    clean_temp_files(out, recursive=True)  # what a killed run left mid-write
    model = _load_sdm(sdm, device)
    settings = {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale,
                "n_per_map": n_per_map, "seed": seed, "size": size,
                "sdm_size": model.config.size, "sdm_step": model.step,
                "real_dir": str(real_dir)}
    if _read_settings(out) not in (None, settings):
        _remove_samples(out)  # made with other settings or another SDM: sample them again
    _remove_unlisted(out, {(row["split"], stem) for row, _, stem in items})
    todo = [it for it in items
            if not all((out / rel).is_file() for rel in _outputs(it[0]["split"], it[2]))]
    if todo:
        (out / RECORDS_FILE).unlink(missing_ok=True)  # present again only when complete
        write_json_atomic(out / SETTINGS_FILE, settings)
        bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="synthesize",
                   unit="img", disable=None if progress else True)
        cache: dict[tuple[str, str], np.ndarray] = {}
        try:
            for i in range(0, len(todo), batch_size):
                chunk = todo[i : i + batch_size]
                maps, seeds, vps = _perturbed(chunk, real_dir, seed, cache)
                small = np.stack([resize_map(m, model.image_size) for m in maps])
                images = model.sample(small, sampler=sampler, steps=steps,
                                      guidance_scale=guidance_scale, seeds=seeds,
                                      view_phase=vps, batch_size=batch_size)
                for (row, _, stem), img, m in zip(chunk, images, maps):
                    _write_one(out, row["split"], stem, img, m, size)
                bar.update(len(chunk))
        finally:
            bar.close()

    write_records([_record(row, stem) for row, _, stem in items], out)
    return out


def _source_rows(real_dir: Path, splits: Sequence[str], max_maps: int | None,
                 max_per_split: int | None = None) -> pd.DataFrame:
    """The real images to synthesize from: ``splits`` in ``SPLITS`` order, then by stem; the
    first ``max_per_split`` of each split, then the first ``max_maps``, when given."""
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"splits {bad} unknown; expected some of {SPLITS}")
    rows = read_records(real_dir)
    rows = rows[rows["split"].isin(list(splits))].copy()
    rows["_order"] = rows["split"].map({s: i for i, s in enumerate(SPLITS)})
    rows = rows.sort_values(["_order", "stem"]).drop(columns="_order")
    if max_per_split is not None:
        if int(max_per_split) < 1:
            raise ValueError(f"max_per_split must be >= 1, got {max_per_split}")
        rows = rows.groupby("split", sort=False).head(int(max_per_split))
    if max_maps is not None:
        rows = rows.head(int(max_maps))
    if rows.empty:
        raise ValueError(f"{real_dir}/{RECORDS_FILE}: no images in the splits {list(splits)}")
    return rows


def _perturbed(chunk: list[tuple], real_dir: Path, seed: int,
               cache: dict[tuple[str, str], np.ndarray]) -> tuple[list, list[int], list[int]]:
    """The perturbed maps, sampling seeds and view/phase of a chunk of (row, k, stem); both
    the map and the seed come from the generator of (seed, source stem, k). ``cache`` keeps
    the last real map, keyed by (split, stem) (a chunk holds its ``n_per_map`` samples side
    by side)."""
    maps, seeds, vps = [], [], []
    for row, k, _stem in chunk:
        key = (row["split"], row["stem"])  # a stem repeats across splits (CAMUS 2019)
        if key not in cache:
            cache.clear()
            cache[key] = real_sdm_map(real_dir, row["split"], row["stem"])[1]
        rng = np.random.default_rng(_seed(seed, row["stem"], k))
        maps.append(perturb_map(cache[key], rng))
        seeds.append(int(rng.integers(2**31)))
        vps.append(_view_phase(row))
    return maps, seeds, vps


def _record(row: dict, stem: str) -> dict:
    """The ``records.csv`` row of a synthetic image: its source's facts, no quality."""
    rec = {c: row[c] for c in ("patient", "view", "phase", "split", "sex", "age",
                               "source_height", "source_width", "spacing_y", "spacing_x")}
    rec.update(stem=stem, quality="", source_stem=row["stem"])
    return rec


def _view_phase(row) -> int:
    return VIEW_PHASE.get((row["view"], row["phase"]), NULL_VIEW_PHASE)


# --------------------------------------------------------------------------- fidelity


def _sector_and_map(dataset_dir: Path, split: str, stem: str, image: np.ndarray, label):
    """The 5-class map of an image: from ``sdm_maps`` where the dataset has it (synthetic
    sets), else from the image's sector and the label map (real sets)."""
    path = map_path(dataset_dir, split, stem)
    if path.is_file():
        m = read_png(path)
        if m.shape != image.shape:
            m = resize_map(m, image.shape[0])
        return m
    return to_sdm_map(label, sector_mask(image))


def fidelity(dataset_dir, *, bright: int = 64, margin: float = 0.02,
             max_images: int | None = None) -> dict:
    """Does each image follow its label map? Returns

    - ``n_images``;
    - ``lv_darker_than_myo``: fraction of images whose LV cavity is darker (mean) than
      their myocardium (target >= 0.9);
    - ``outside_bright_images``: fraction of images with more than 1 % of the outside
      (farther than ``margin`` x size from the sector) brighter than ``bright`` (target 0);
    - ``outside_bright_pixels``: fraction of all such outside pixels brighter than ``bright``;
    - mean intensities per class (``mean_lv``, ``mean_myo``, ``mean_la``, ``mean_tissue``,
      ``mean_outside``).
    """
    import cv2

    dataset_dir = Path(dataset_dir)
    rows = read_records(dataset_dir)
    if max_images is not None:
        rows = rows.head(int(max_images))
    darker, bright_img, n_out, n_bright = [], [], 0, 0
    means: dict[str, list[float]] = {k: [] for k in ("lv", "myo", "la", "tissue", "outside")}
    for row in rows.itertuples():
        img = read_png(image_path(dataset_dir, row.split, row.stem))
        lbl = read_png(label_path(dataset_dir, row.split, row.stem))
        m = _sector_and_map(dataset_dir, row.split, row.stem, img, lbl)
        r = max(1, int(round(margin * img.shape[0])))
        sector = (m != OUTSIDE).astype(np.uint8)
        grown = cv2.dilate(sector, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
        outside = grown == 0
        for name, cls in (("lv", 1), ("tissue", 2), ("myo", 3), ("la", 4), ("outside", 0)):
            sel = img[m == cls]
            if sel.size:
                means[name].append(float(sel.mean()))
        if (m == LV).any() and (m == MYO).any():
            darker.append(float(img[m == LV].mean()) < float(img[m == MYO].mean()))
        if outside.any():
            b = int((img[outside] > bright).sum())
            n_out += int(outside.sum())
            n_bright += b
            bright_img.append(b > 0.01 * outside.sum())
    return {
        "n_images": int(len(rows)),
        "lv_darker_than_myo": float(np.mean(darker)) if darker else float("nan"),
        "outside_bright_images": float(np.mean(bright_img)) if bright_img else float("nan"),
        "outside_bright_pixels": n_bright / n_out if n_out else float("nan"),
        **{f"mean_{k}": float(np.mean(v)) if v else float("nan") for k, v in means.items()},
    }


# --------------------------------------------------------------------------- timings


def time_samplers(sdm, maps, samplers: Sequence[tuple[str, int]] = (("ddpm", 1000), ("ddim", 50),
                  ("dpm++", 20)), guidance_scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Wall-clock seconds and images/s of each (sampler, steps) on the same maps and model."""
    maps = np.asarray(maps)
    rows = []
    for name, steps in samplers:
        t0 = time.perf_counter()
        sdm.sample(maps, sampler=name, steps=steps, guidance_scale=guidance_scale,
                   seeds=[seed + i for i in range(len(maps))], batch_size=len(maps))
        sec = time.perf_counter() - t0
        rows.append({"sampler": name, "steps": steps, "images": len(maps),
                     "seconds": round(sec, 3), "images_per_s": len(maps) / sec})
    df = pd.DataFrame(rows)
    base = df["images_per_s"].iloc[0]
    df["speedup"] = df["images_per_s"] / base
    return df


__all__ = ["fidelity", "real_sdm_map", "synthesize", "synthetic_dir_for", "time_samplers"]
