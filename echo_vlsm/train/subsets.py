"""Which training data a run sees beyond the study: a patient-level fraction of the real
data (``real_fraction``) and a drawn share of the synthetic images (``synthetic_ratio``).

The rule for a fraction ``f`` of a split's ``n`` patients: the patients sorted, permuted by
``numpy.random.default_rng(subset_seed)``, the first ``max(1, ceil(f * n))`` kept. Every
fraction of a seed permutes the same way, so the subsets are nested (the 10 % subset holds the
5 % one), and every training seed of a cell sees the same patients. A sample's patient is
``records.csv``'s ``patient`` column of its stem (``echo_vlsm.dataset.read_records``), or the
stem's first part (``patient0001`` of ``patient0001_2CH_ED``) where the records say nothing.

Examples::

    >>> subset_patients([f"patient{i:04d}" for i in range(1, 21)], 0.1, subset_seed=0)
    ['patient0005', 'patient0020']
    >>> set(subset_patients([f"p{i}" for i in range(20)], 0.05)) <= set(
    ...     subset_patients([f"p{i}" for i in range(20)], 0.1))
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from echo_vlsm.dataset import read_records
from echo_vlsm.grid import SUBSET_FILE
from echo_vlsm.io import write_json_atomic
from echo_vlsm.train.triplets import Triplets

__all__ = ["SUBSET_FILE", "image_patients", "keep_count", "select_patients", "subset_patients",
           "synthetic_share", "write_subset_record"]

#: The rule, as ``real_subset.json`` states it.
RULE = ("patients of each split sorted, permuted by numpy.random.default_rng(subset_seed), "
        "the first max(1, ceil(real_fraction * n)) kept; the test split is never subset")


def keep_count(fraction: float, n: int) -> int:
    """``max(1, ceil(fraction * n))`` patients of ``n`` (``fraction * n`` rounded to 9 places
    first, so 0.07 x 100 keeps 7, not 8); all of them for ``fraction`` 1.

    >>> keep_count(0.05, 20), keep_count(0.07, 100), keep_count(0.01, 5), keep_count(1.0, 7)
    (1, 7, 1, 7)
    """
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(round(float(fraction) * n, 9))))


def subset_patients(patients: Iterable[str], fraction: float, subset_seed: int = 0) -> list[str]:
    """The patients a ``fraction`` keeps (in their permuted order; see the module)."""
    ordered = sorted(set(patients))
    perm = np.random.default_rng(subset_seed).permutation(len(ordered))
    return [ordered[i] for i in perm[:keep_count(fraction, len(ordered))]]


def _stem_patient(stem: str) -> str:
    return str(stem).split("_", 1)[0]


def _per_image(data: Triplets, key: str) -> list[str]:
    """``sample[key]`` of each unique image of ``data`` (in ``data.images`` order), read from
    the first triplet of that image."""
    first: dict[int, str] = {}
    for i, s in zip(data.image_index.tolist(), data.samples):
        first.setdefault(int(i), s[key])
    return [first[i] for i in range(len(first))]


def image_patients(data: Triplets, dataset_dir: str | os.PathLike | None = None) -> list[str]:
    """The patient of each unique image of ``data`` (in ``data.images`` order): from the
    dataset's ``records.csv`` when it names the stem's patient, else the stem's first part."""
    root = Path(dataset_dir or data.source.get("dataset", "."))
    try:
        records = read_records(root)
        by_stem = {str(s): str(p) for s, p in zip(records["stem"], records["patient"])
                   if isinstance(p, str) and p.strip()}
    except (OSError, ValueError, KeyError):
        by_stem = {}
    return [by_stem.get(stem, _stem_patient(stem)) for stem in _per_image(data, "sample")]


def select_patients(data: Triplets, fraction: float, subset_seed: int = 0,
                    dataset_dir: str | os.PathLike | None = None) -> tuple[Triplets, dict]:
    """``data`` restricted to the images of the patients ``fraction`` keeps, and the record
    of the choice: ``{"patients": [...] (sorted), "images": n, "of_patients": N,
    "of_images": M, "triplets": k}``."""
    per_image = image_patients(data, dataset_dir)
    keep = set(subset_patients(per_image, fraction, subset_seed))
    images = [i for i, p in enumerate(per_image) if p in keep]
    record = {"patients": sorted(keep), "images": len(images),
              "of_patients": len(set(per_image)), "of_images": len(per_image)}
    out = data.select_images(torch.tensor(images, dtype=torch.long))
    record["triplets"] = len(out)
    return out, record


def synthetic_share(data: Triplets, ratio: float | None, n_real_images: int,
                    seed: int = 0) -> Triplets:
    """``ratio`` synthetic images per real image (``round(ratio * n_real_images)``, at least
    one, at most all), drawn by image (with all its structures) by
    ``numpy.random.default_rng([seed, 1])`` from the images sorted by name; ``None``: all."""
    n = int(data.images.shape[0])
    if ratio is None:
        return data
    k = min(n, max(1, round(float(ratio) * n_real_images)))
    names = _per_image(data, "img_name")
    ordered = sorted(range(n), key=lambda i: names[i])
    perm = np.random.default_rng([int(seed), 1]).permutation(n)
    chosen = sorted(ordered[j] for j in perm[:k])
    return data.select_images(torch.tensor(chosen, dtype=torch.long))


def write_subset_record(run_dir: str | os.PathLike, fraction: float, subset_seed: int,
                        splits: dict[str, dict]) -> Path:
    """``<run_dir>/real_subset.json``: the fraction, the seed, the rule and, per split, the
    patients kept and their image count (``select_patients``' records)."""
    path = Path(run_dir) / SUBSET_FILE
    write_json_atomic(path, {"real_fraction": float(fraction), "subset_seed": int(subset_seed),
                             "rule": RULE, "splits": splits, "test": "all patients"})
    return path
