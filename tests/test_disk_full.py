"""A full disk (issue 23, sec. 3), for real on a 2 MB tmpfs: one row per writer of the
project. Each write of about 1 MB, into a file system already holding a 1.5 MB file, must
stop with ``echo_vlsm.io.DiskFullError`` naming the file and the space free, leave the
previous version of the file as it was and no temporary file, and once space is freed write
the same bytes as the same write on a roomy disk.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echo_vlsm import io

_NOISE = np.random.default_rng(0).integers(0, 256, (1000, 1000), np.uint8)  # 1 MB, incompressible
_WEIGHTS = torch.from_numpy(_NOISE.view(np.float32).copy()).view(500, 500)  # 1 MB of float32


def _np_save(path: Path) -> None:
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, _NOISE)


def _model() -> torch.nn.Module:
    model = torch.nn.Linear(500, 500, bias=False)
    with torch.no_grad():
        model.weight.copy_(_WEIGHTS)
    return model


@functools.cache
def _frame(rows: int = 2_000) -> pd.DataFrame:
    """A table of about 1 MB as CSV or Markdown, from the noise (the same every time)."""
    noise = _NOISE.ravel()
    return pd.DataFrame({"sample": [noise[250 * i:250 * (i + 1)].tobytes().hex()
                                    for i in range(rows)],
                         "dice": noise[:rows] / 2.55, "hd95": noise[rows:2 * rows] / 7.0})


def _run_weights(folder: Path) -> None:
    from echo_vlsm.train.checkpoint import save_weights

    save_weights(_model(), folder / "model.safetensors")


def _run_state(folder: Path) -> None:
    from echo_vlsm.train.checkpoint import save_state

    save_state(folder / "state.pt", {"model": {"weight": _WEIGHTS}, "epoch": 3,
                                     "history": [{"epoch": 1, "val_dice": 0.5}]})


def _sdm_weights(folder: Path) -> None:
    from echo_vlsm.sdm.diffusion.checkpoints import save_weights
    from echo_vlsm.sdm.diffusion.config import SDMConfig
    from echo_vlsm.sdm.diffusion.ema import EMA

    model = torch.nn.Linear(500, 250, bias=False)  # 0.5 MB, and as much again in the EMA
    with torch.no_grad():
        model.weight.copy_(_WEIGHTS[:250])
    save_weights(folder, model, EMA(model), SDMConfig(train_steps=10), step=10)


def _sdm_state(folder: Path) -> None:
    from echo_vlsm.sdm.diffusion.checkpoints import save_state
    from echo_vlsm.sdm.diffusion.ema import EMA

    torch.manual_seed(0)  # the state records torch's random state
    model = _model()
    ema = EMA(torch.nn.Linear(1, 1, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_state(folder, model, ema, opt, 10, torch.Generator().manual_seed(0),
               [{"step": 10, "loss": 0.5, "lr": 0.1, "seconds": 1.0}])


def _sdm_history(folder: Path) -> None:
    from echo_vlsm.sdm.diffusion.checkpoints import write_history

    write_history(folder, [{"step": i, "loss": float(v) / 255, "lr": 1e-4, "seconds": i / 3}
                           for i, v in enumerate(_NOISE.ravel()[:25_000])])


def _metrics(folder: Path) -> None:  # as train.scoring writes metrics.csv
    io.write_text_atomic(folder / "metrics.csv", _frame().to_csv(index=False))


def _clinical(folder: Path) -> None:
    from echo_vlsm.train.clinical_eval import write_clinical

    write_clinical(folder, _frame())


def _report(folder: Path) -> None:
    from echo_vlsm.analysis.report import write_report
    from echo_vlsm.analysis.tables import markdown_table

    write_report(folder / "report.md", "Report", [("Metrics", markdown_table(_frame()))])


def _report_update(folder: Path) -> None:
    from echo_vlsm.analysis.report import update_report

    update_report(folder / "report.md", [("Beyond the study", _frame().to_csv())])


def _table(folder: Path) -> None:
    from echo_vlsm.analysis.tables import write_frame

    write_frame(_frame(1_300), folder, "table")  # .md and .csv: both fit a freed disk


def _dataset_cache(folder: Path) -> None:
    from echo_vlsm.train.decoding import _cache_save

    _cache_save(folder, "pixels-train-16-0123456789abcdef.pt",
                {"images": torch.from_numpy(_NOISE.copy()), "masks": None})


#: (case, the file it writes into its folder, the writer)
FULL_DISK_CASES: list[tuple[str, str, Callable[[Path], None]]] = [
    ("io.write_bytes_atomic", "out.bin", lambda d: io.write_bytes_atomic(d / "out.bin",
                                                                       _NOISE.tobytes())),
    ("io.write_text_atomic", "out.txt",
     lambda d: io.write_text_atomic(d / "out.txt", _NOISE.tobytes().hex()[:1_000_000])),
    ("io.write_json_atomic", "out.json",
     lambda d: io.write_json_atomic(d / "out.json", _NOISE[:400].tolist(), indent=None)),
    ("io.write_png (Pillow)", "out.png", lambda d: io.write_png(d / "out.png", _NOISE)),
    ("io.write_png (OpenCV, level 1)", "out.png",
     lambda d: io.write_png(d / "out.png", _NOISE, compression=1)),
    ("io.atomic_path + np.save", "out.npy", lambda d: _np_save(d / "out.npy")),
    ("run weights (safetensors)", "model.safetensors", _run_weights),
    ("run state (torch.save)", "state.pt", _run_state),
    ("SDM weights (safetensors, header sorted)", "model.safetensors", _sdm_weights),
    ("SDM state (torch.save)", "state.pt", _sdm_state),
    ("SDM history.csv", "history.csv", _sdm_history),
    ("metrics.csv", "metrics.csv", _metrics),
    ("clinical.csv", "clinical.csv", _clinical),
    ("report.md (write_report)", "report.md", _report),
    ("report.md (update_report)", "report.md", _report_update),
    ("analysis table (write_frame)", "table.md", _table),
    ("dataset cache (decoded pixels)", "pixels-train-16-0123456789abcdef.pt", _dataset_cache),
]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, mounted for the test (root only; CI runs as root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root: mounting a tmpfs must work ({mount.stderr.strip()})")
        pytest.skip(f"cannot mount a 2 MB tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("case, name, write", FULL_DISK_CASES, ids=[c[0] for c in FULL_DISK_CASES])
def test_a_full_disk_names_the_file_keeps_the_old_one_and_resumes(small_disk, tmp_path, case,
                                                                  name, write):
    previous = b"the previous version\n"
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / name).write_bytes(previous)
    write(reference)  # the same write on a roomy disk
    expected = (reference / name).read_bytes()
    assert len(expected) > 600_000, "too small to fill the disk"
    folder = small_disk / "sub"
    folder.mkdir()
    target = folder / name
    target.write_bytes(previous)
    filler = small_disk / "filler"
    filler.write_bytes(bytes(1_500_000))
    with pytest.raises(io.DiskFullError, match=rf"^{re.escape(str(target))}: no space left on "
                       r"device while writing it \(0\.\d MB free there now\); nothing was "
                       r"written") as info:
        write(folder)
    assert info.value.errno == 28 and info.value.path == target
    assert target.read_bytes() == previous  # not half of the new one
    assert not list(small_disk.rglob(".*.tmp"))  # no temporary file left behind
    filler.unlink()  # space freed: the same write, to the same bytes
    write(folder)
    assert target.read_bytes() == expected
