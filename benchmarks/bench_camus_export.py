"""Speed of the CAMUS reader and the export on a CAMUS-sized synthetic tree.

Writes a 2023-layout tree of ``--patients`` patients (images about 600 x 450 like CAMUS, smooth
content with noise), then times ``read_camus`` (metadata for all patients), ``validate`` and
``export_dataset`` at 512 (first run and the skipping second run) on ``--export-patients``.

    python benchmarks/bench_camus_export.py --patients 500 --export-patients 50 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._results import machine, update_section  # noqa: E402
from echo_vlsm.data.camus import read_camus, validate  # noqa: E402
from echo_vlsm.data.export import export_dataset  # noqa: E402


def _write(path: Path, array: np.ndarray, spacing) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((spacing[1], spacing[0]))
    sitk.WriteImage(img, str(path), useCompression=True)


def write_tree(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    names = [f"patient{i:04d}" for i in range(1, n + 1)]
    for i, name in enumerate(names):
        folder = root / "database_nifti" / name
        folder.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(550, 700)), int(rng.integers(400, 500))
        spacing = (0.15 + 0.01 * (i % 10), 0.15 + 0.01 * (i % 10))
        yy, xx = np.mgrid[:h, :w]
        for view in ("2CH", "4CH"):
            (folder / f"Info_{view}.cfg").write_text(
                f"ED: 1\nNbFrame: 20\nES: 14\nSex: {'MF'[i % 2]}\nAge: {30 + i % 60}\n"
                f"ImageQuality: {('Good', 'Medium', 'Poor')[i % 3]}\nEF: 55.0\nFrameRate: 30.0\n"
            )
            for phase in ("ED", "ES"):
                base = ((xx + yy) // 4 % 200).astype(np.uint8)
                noise = rng.integers(0, 16, (h, w), dtype=np.uint8)
                _write(folder / f"{name}_{view}_{phase}.nii.gz", base + noise, spacing)
                r = np.hypot(yy - h / 2, xx - w / 2)
                label = np.digitize(r, [h / 8, h / 6, h / 4]).astype(np.uint8)
                label = np.where(label == 3, 0, 3 - label).astype(np.uint8)
                _write(folder / f"{name}_{view}_{phase}_gt.nii.gz", label, spacing)
    split = root / "database_split"
    split.mkdir(parents=True, exist_ok=True)
    k = len(names)
    parts = {"training": names[: k * 8 // 10], "validation": names[k * 8 // 10 : k * 9 // 10],
             "testing": names[k * 9 // 10 :]}
    for key, members in parts.items():
        (split / f"subgroup_{key}.txt").write_text("".join(m + "\n" for m in members))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=500)
    ap.add_argument("--export-patients", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        root = write_tree(Path(tmp) / "camus", args.patients)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        records = read_camus(root)
        t_read = time.perf_counter() - t
        subset = [r for r in records if int(r.patient[7:]) <= args.export_patients]
        t = time.perf_counter()
        problems = validate(root, splits={"train": list(range(1, args.export_patients + 1))})
        t_validate = time.perf_counter() - t
        assert problems == [], problems[:3]
        out = Path(tmp) / "out"
        t = time.perf_counter()
        export_dataset(subset, out, size=args.size, workers=args.workers)
        t_export = time.perf_counter() - t
        t = time.perf_counter()
        export_dataset(subset, out, size=args.size, workers=args.workers)
        t_again = time.perf_counter() - t
    n, m = len(records), len(subset)
    md = "\n".join([
        "## CAMUS reader and export (`benchmarks/bench_camus_export.py`)",
        "",
        f"Machine: {machine()}. Synthetic 2023-layout tree, images ~600 x 450 (.nii.gz).",
        "Measured on a shared machine; treat as rough.",
        "",
        "| step | items | seconds | per item (ms) |",
        "|---|---|---|---|",
        f"| write tree (setup) | {n} images | {t_write:.1f} | {1000 * t_write / n:.1f} |",
        f"| `read_camus` (metadata, headers) | {n} records | {t_read:.2f} | "
        f"{1000 * t_read / n:.2f} |",
        f"| `validate` (all pixels) | {m} records | {t_validate:.2f} | "
        f"{1000 * t_validate / m:.1f} |",
        f"| `export_dataset` size {args.size}, {args.workers} workers | {m} records | "
        f"{t_export:.2f} | {1000 * t_export / m:.1f} |",
        f"| second run (all skipped) | {m} records | {t_again:.2f} | {1000 * t_again / m:.2f} |",
    ])
    print(md)
    if not args.no_write:
        update_section("camus_export", md)


if __name__ == "__main__":
    main()
