"""``echo-vlsm measure`` (issue 21, sec. 5): one patient's EDV, ESV and EF from the LV masks a
trained model draws; every refusal names the file and what to pass."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from echo_vlsm.cli import main
from echo_vlsm.clinical import biplane_volumes
from echo_vlsm.data.headers import read_header
from echo_vlsm.data.headers import read_image as read_camus_image
from echo_vlsm.io import write_png

NAMES = ("2CH_ED", "2CH_ES", "4CH_ED", "4CH_ES")


@pytest.fixture(scope="module")
def tiny_run(task_dataset, tmp_path_factory):
    """A tiny CRIS trained with P1 for 10 epochs: LV masks that can be measured. After 5 epochs
    (test_train_loop's run) the masks still cover 35-45 % of the image and, on some CPUs,
    touch its border (no volume then)."""
    import torch

    from echo_vlsm.train import TrainConfig, fit

    torch.set_num_threads(1)
    config = TrainConfig(model="cris", size="tiny", prompt="p1", strategy="real",
                         encoders="trained", epochs=10, batch_size=4, lr=1e-3, device="cpu",
                         real_dir=str(task_dataset), synthetic_dir=str(task_dataset),
                         runs_root=str(tmp_path_factory.mktemp("runs")))
    return fit(config, progress=False).run_dir


@pytest.fixture
def patient(phantom_root, tmp_path) -> Path:
    """A private copy of a phantom patient folder (2023 layout: .nii.gz and Info cfgs)."""
    src = phantom_root / "database_nifti" / "patient0001"
    dst = tmp_path / "patient0001"
    shutil.copytree(src, dst)
    return dst


def _pngs(folder: Path, out: Path, names=NAMES, prefix: str = "case7") -> list[str]:
    """The patient's images as PNGs named ``<prefix>_<view>_<phase>.png`` (no spacing)."""
    out.mkdir(exist_ok=True)
    files = []
    for name in names:
        pixels, _ = read_camus_image(folder / f"{folder.name}_{name}.nii.gz")
        path = out / f"{prefix}_{name}.png"
        write_png(path, pixels)
        files.append(str(path))
    return files


# (id, how the command line is built from (patient folder, tmp), the file named, the message)
REFUSALS = [
    ("folder-missing-image", lambda p, t: ((p / "patient0001_4CH_ES.nii.gz").unlink(), [p])[1],
     "patient0001_4CH_ES.nii.gz", "missing: the patient's 4CH_ES image"),
    ("three-images", lambda p, t: _pngs(p, t / "png", NAMES[:3]) + ["--spacing", "0.3"],
     "png", "missing the 4CH_ES image(s)"),
    ("png-without-spacing", lambda p, t: _pngs(p, t / "png"),
     "case7_2CH_ED.png", "no pixel spacing in this file; pass --spacing ROW_MM,COL_MM"),
    ("unnamed-image", lambda p, t: [*_pngs(p, t / "png")[:3], _renamed(t)],
     "scan.png", "the file name does not say which image it is"),
    ("twice-the-same-image", lambda p, t: [*_pngs(p, t / "png"), _pngs(
        p, t / "png", NAMES[:1], prefix="again")[0], "--spacing", "0.3"],
     "again_2CH_ED.png", "a second 2CH_ED image"),
    ("p7-needs-the-shape", lambda p, t: [p, "--prompt", "p7"],
     "Info_2CH.cfg", "prompt p7 needs shape, which this cfg does not give: pass "
                     "--attr shape=... (shape: the LV's shape word"),
    ("p4-needs-sex", lambda p, t: [*_pngs(p, t / "png"), "--spacing", "0.3", "--prompt", "p4"],
     "case7_2CH_ED.png", "prompt p4 needs sex, which an image file does not carry: pass "
                         "--attr sex=..."),
    ("p6-needs-quality", lambda p, t: [*_pngs(p, t / "png"), "--spacing", "0.3,0.25",
                                       "--prompt", "p6", "--attr", "sex=F", "--attr", "age=60"],
     "case7_2CH_ED.png", "prompt p6 needs quality"),
    ("p5-folder-without-cfg", lambda p, t: ([f.unlink() for f in p.glob("Info_*.cfg")],
                                            [p, "--prompt", "p5"])[1],
     "Info_2CH.cfg", "prompt p5 needs sex, age; the patient folder has no Info_2CH.cfg"),
    ("bad-cfg", lambda p, t: ((p / "Info_2CH.cfg").write_text("Sex: X\nAge: 50\n"
                                                             "ImageQuality: Good\n"), [p])[1],
     "Info_2CH.cfg", "Sex is 'X'"),
    ("bad-spacing", lambda p, t: [*_pngs(p, t / "png"), "--spacing", "0.3,abc"],
     "--spacing", "expected ROW_MM,COL_MM"),
]


def _renamed(tmp: Path) -> str:
    src = tmp / "png" / "case7_4CH_ES.png"
    dst = tmp / "png" / "scan.png"
    src.rename(dst)
    return str(dst)


@pytest.mark.parametrize("build, named, message", [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])
def test_measure_refuses_with_the_file_and_what_to_pass(tiny_run, patient, tmp_path, capsys,
                                                        build, named, message):
    args = [str(a) for a in build(patient, tmp_path)]
    out = tmp_path / "m.json"
    rc = main(["measure", str(tiny_run), *args, "--out", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("echo-vlsm measure: ") and named in err and message in err, err
    assert not out.exists()


def test_measure_a_phantom_patient(tiny_run, patient, tmp_path, capsys):
    from echo_vlsm.inference import segment

    out = tmp_path / "patient.json"
    rc = main(["measure", str(tiny_run), str(patient), "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    record = json.loads(out.read_text())
    # the same masks, measured by hand: segment each image with the run's key, P1
    masks, spacing = {}, {}
    for name in NAMES:
        path = patient / f"patient0001_{name}.nii.gz"
        result = segment(tiny_run, path, "p1", attributes={"structure": "lv",
                                                          "view": name[:3], "phase": name[4:]},
                         device="cpu")
        masks[name], spacing[name] = result.mask, read_header(path)[1]
        assert record["images"][name]["prompt_text"] == result.prompt
        assert record["images"][name]["spacing_mm"] == list(spacing[name])
    want = biplane_volumes(*(masks[n] for n in NAMES), spacing["2CH_ED"], spacing["4CH_ED"])
    assert record["patient"] == "patient0001" and record["prompt"] == "p1"
    assert record["disc_height"] == "camus"
    assert record["reference"]["ef_percent"] == 58.2  # Info_2CH.cfg (2023 layout: EF only)
    assert record["reference"]["edv_ml"] is None
    assert want.reason is None and record["reason"] is None and rc == 0, want.reason
    for key, value in (("edv_ml", want.edv_ml), ("esv_ml", want.esv_ml),
                       ("ef_percent", want.ef_percent)):
        assert math.isfinite(value) and record[key] == pytest.approx(value, rel=1e-12)
        assert f"{value:.1f}" in printed
    for name in NAMES:
        assert record["images"][name]["long_axis_mm"] == pytest.approx(want.long_axes_mm[name])
    assert np.array_equal(masks["2CH_ED"].shape, read_header(
        patient / "patient0001_2CH_ED.nii.gz")[0])  # measured at the image's own size

    # the 2CH images as PNGs with --spacing, the 4CH ones as they are (their own header's
    # spacing): the same numbers
    files = _pngs(patient, tmp_path / "png", NAMES[:2]) + [
        str(patient / f"patient0001_{n}.nii.gz") for n in NAMES[2:]]
    sp = spacing["2CH_ED"]
    out2 = tmp_path / "png.json"
    main(["measure", str(tiny_run), *files, "--spacing", f"{sp[0]!r},{sp[1]!r}",
          "--out", str(out2), "--device", "cpu"])
    png = json.loads(out2.read_text())
    assert png["images"]["4CH_ES"]["spacing_mm"] == list(spacing["4CH_ES"])
    for key in ("edv_ml", "esv_ml", "ef_percent", "reason"):
        assert png[key] == record[key], key
