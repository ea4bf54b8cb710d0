"""A profile's external inputs are checked before any job runs (issue 23, section 5).

One table: each row builds a small profile in a temporary root, damages or removes one of its
inputs, and states what the check says (``None``: it passes). Then the shipped profiles (the
paper profile on a fresh root, the demo, the rehearsal on stand-ins in their layout) and the
command line, local and Slurm, which refuse before anything runs or is submitted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from echo_vlsm.cli import main
from echo_vlsm.pipeline import plan
from echo_vlsm.pipeline.graph import marker_record
from echo_vlsm.pipeline.inputs import (
    MissingInputsError,
    check_inputs,
    check_profile_inputs,
    find_missing,
)
from echo_vlsm.rehearsal.standins import STANDINS

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REHEARSAL_HINT = "`make rehearsal` (echo-vlsm rehearse) tries the paper profile"


def base_profile() -> dict:
    """Every input present (made by ``make_inputs``), one CLIPSeg and one CRIS run."""
    return {
        "profile": "t", "runs_root": "runs/t", "env": {},
        "steps": {
            "01_data_preparation": {"source": "raw/camus", "raw_dir": "raw/camus",
                                    "out_dir": "data/camus", "size": 64},
            "02_sdm_synthesis": {"real_dir": "data/camus", "out_dir": "data/syn",
                                 "sdm_dir": "runs/t/sdm", "released_dir": "raw/sdm-camus",
                                 "device": "cpu"},
            "03_prompt_generation": {"real_dir": "data/camus", "synthetic_dir": "data/syn"},
        },
        "train": {"size": "tiny", "pretrained": None, "real_dir": "data/camus",
                  "synthetic_dir": "data/syn", "device": "cpu"},
        "grid": [{"models": ["clipseg", "cris"], "strategies": ["real"], "prompts": ["p1"],
                  "encoders": ["trained"]}],
    }


def make_inputs(root: Path) -> None:
    (root / "raw/camus/training/patient0001").mkdir(parents=True)
    (root / "raw/sdm-camus/2CH_ED/images/training").mkdir(parents=True)


def fake_hub_cache(cache: Path, hub_id: str) -> None:
    """The Hugging Face cache layout of ``hub_id`` with a config and a weights file."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"x")


# each: the change to the profile and the tree, then the message's parts (None: it passes)
def _rm(rel):
    def change(prof, root):
        target = root / rel
        for p in sorted(target.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        target.rmdir()
    return change


def _set(where, **values):
    def change(prof, root):
        node = prof
        for key in where.split("."):
            node = node[key]
        node.update(values)
    return change


def _both(*changes):
    def change(prof, root):
        for c in changes:
            c(prof, root)
    return change


def _without_prepare(prof, root):
    prof["steps"] = {}


def _empty_camus(prof, root):
    _rm("raw/camus")(prof, root)
    (root / "raw/camus/notes").mkdir(parents=True)


def _camus_file(prof, root):
    _rm("raw/camus")(prof, root)
    (root / "raw/camus").write_text("not a folder")


def _flat_released(prof, root):
    _rm("raw/sdm-camus")(prof, root)
    (root / "raw/sdm-camus").mkdir()
    (root / "raw/sdm-camus/a.png").write_bytes(b"")


def _dataset_without_records(prof, root):
    _without_prepare(prof, root)
    (root / "data/camus").mkdir(parents=True)


def _clipseg_folder_without_config(prof, root):
    (root / "weights/clipseg").mkdir(parents=True)
    (root / "weights/clipseg/model.safetensors").write_bytes(b"")
    _set("train", pretrained="weights/clipseg")(prof, root)
    prof["grid"][0]["models"] = ["clipseg"]


def _clipseg_only(prof, root):
    prof["grid"][0]["models"] = ["clipseg"]


def _cris_env(prof, root):
    (root / "w").mkdir()
    (root / "w/cris.pth").write_bytes(b"")
    prof["env"] = {"ECHO_VLSM_CRIS_WEIGHTS": "w/cris.pth"}
    prof["grid"][0]["models"] = ["cris"]
    _set("train", pretrained=True)(prof, root)


def _cris_only_true(prof, root):
    prof["grid"][0]["models"] = ["cris"]
    _set("train", pretrained=True)(prof, root)


CASES = {
    "every input there": (None, None),
    "CAMUS folder missing": (_rm("raw/camus"), [
        "CAMUS folder {root}/raw/camus: does not exist (needed by 01_data_preparation); "
        "see data/README.md (CAMUS)"]),
    "CAMUS folder not a CAMUS tree": (_empty_camus, [
        "CAMUS folder {root}/raw/camus: not a CAMUS tree: expected 'database_nifti/'"]),
    "CAMUS path a file": (_camus_file, ["CAMUS folder {root}/raw/camus: is not a folder"]),
    "the phantom instead: nothing to find": (
        _both(_rm("raw/camus"), _set("steps.01_data_preparation", source="phantom")), None),
    "SDM-CAMUS folder missing": (_rm("raw/sdm-camus"), [
        "SDM-CAMUS folder {root}/raw/sdm-camus: does not exist (needed by 02_sdm_synthesis); "
        "see data/README.md (SDM-CAMUS), or set released_dir: null"]),
    "SDM-CAMUS folder in another layout": (_flat_released, [
        "SDM-CAMUS folder {root}/raw/sdm-camus: holds no <view>/images/<split>/ folders"]),
    "released_dir null: the SDM is trained here": (
        _both(_rm("raw/sdm-camus"), _set("steps.02_sdm_synthesis", released_dir=None)), None),
    "SDM checkpoint missing": (_set("steps.02_sdm_synthesis", checkpoint="runs/old/sdm"), [
        "trained SDM {root}/runs/old/sdm: does not exist"]),
    "dataset no step makes, missing": (_without_prepare, [
        "exported dataset {root}/data/camus: does not exist (needed by clipseg_real_trained_p1, "
        "cris_real_trained_p1); see data/README.md"]),
    "dataset no step makes, no records.csv": (_dataset_without_records, [
        "exported dataset {root}/data/camus: has no records.csv"]),
    "CLIPSeg local folder missing": (
        _both(_clipseg_only, _set("train", pretrained="weights/clipseg")),
        ["CLIPSeg weights {root}/weights/clipseg: does not exist (needed by "
         "clipseg_real_trained_p1); see docs/weights.md (CLIPSeg)"]),
    "CLIPSeg folder without config.json": (_clipseg_folder_without_config, [
        "CLIPSeg weights {root}/weights/clipseg: is not a folder saved with save_pretrained"]),
    "CLIPSeg env folder missing": (
        _both(_clipseg_only, _set("train", pretrained=True),
              _set("env", ECHO_VLSM_CLIPSEG_WEIGHTS="./w/clipseg")),
        ["CLIPSeg weights (from $ECHO_VLSM_CLIPSEG_WEIGHTS) {root}/w/clipseg: does not exist"]),
    "hub id offline, not cached": (
        _both(_clipseg_only, _set("train", pretrained="nobody/uncached"),
              _set("env", HF_HUB_OFFLINE="1")),
        ["CLIPSeg weights 'nobody/uncached': not in the Hugging Face cache, and "
         "HF_HUB_OFFLINE=1 forbids the download"]),
    "hub id offline (transformers), not cached": (
        _both(_clipseg_only, _set("train", pretrained=True),
              _set("env", TRANSFORMERS_OFFLINE="1")),
        ["CLIPSeg weights 'CIDAS/clipseg-rd64-refined': not in the Hugging Face cache, and "
         "TRANSFORMERS_OFFLINE=1"]),
    "hub id offline, cached": (
        _both(_clipseg_only, _set("train", pretrained="someone/cached"),
              _set("env", HF_HUB_OFFLINE="1")), None),
    "hub id online: downloaded when run": (
        _both(_clipseg_only, _set("train", pretrained="nobody/uncached")), None),
    "CRIS pretrained true, no file anywhere": (_cris_only_true, [
        "CRIS weights (pretrained: true): CRIS checkpoint not found at "
        "{root}/weights/cris/cris_best.pth", "see docs/weights.md (CRIS)"]),
    "CRIS from its variable": (_cris_env, None),
    "CRIS explicit file missing": (
        _both(_set("train", pretrained="w/none.pth"), lambda p, r: p["grid"][0].update(
            models=["cris"])),
        ["CRIS weights {root}/w/none.pth: does not exist (needed by cris_real_trained_p1)"]),
    "device cuda, no GPU": (_set("train", device="cuda"), [
        "a GPU on this machine: the jobs set device: cuda but torch sees no CUDA device "
        "(needed by clipseg_real_trained_p1, cris_real_trained_p1)"]),
    "everything missing: one message": (
        _both(_rm("raw/camus"), _rm("raw/sdm-camus"), _set("train", device="cuda:0")),
        ["3 inputs missing, nothing was run", "CAMUS folder", "SDM-CAMUS folder", "a GPU"]),
}


def _write(prof: dict, root: Path) -> Path:
    path = root / "t.yaml"
    path.write_text(yaml.safe_dump(prof))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_inputs_table(case, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    fake_hub_cache(cache, "someone/cached")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "ECHO_VLSM_CLIPSEG_WEIGHTS",
                "ECHO_VLSM_CRIS_WEIGHTS", "ECHO_VLSM_CLIP_RN50"):
        monkeypatch.delenv(var, raising=False)
    change, expected = CASES[case]
    root = tmp_path / "root"
    root.mkdir()
    make_inputs(root)
    prof = base_profile()
    if change is not None:
        change(prof, root)
    p = plan(_write(prof, root), root=root, notebooks_dir=NOTEBOOKS, log=lambda m: None)
    if expected is None:
        assert find_missing(p, gpu_count=lambda: 0) == []
        return
    with pytest.raises(MissingInputsError) as err:
        check_inputs(p, gpu_count=lambda: 0)
    text = str(err.value)
    assert text.startswith(f"{root / 't.yaml'}: profile t: ")
    for part in expected:
        assert part.format(root=root) in text, text
    assert REHEARSAL_HINT in text


def test_a_step_already_done_needs_no_input(tmp_path):
    """01 finished for its parameters: the CAMUS download may go; 02 still needs its own."""
    root = tmp_path
    make_inputs(root)
    p = plan(_write(base_profile(), root), root=root, notebooks_dir=NOTEBOOKS,
             log=lambda m: None)
    job = p.by_name["01_data_preparation"]
    job.marker.parent.mkdir(parents=True, exist_ok=True)
    job.marker.write_text(json.dumps(marker_record(job, p.by_name, "done")))
    _rm("raw/camus")(None, root)
    _rm("raw/sdm-camus")(None, root)
    missing = find_missing(p, gpu_count=lambda: 0)
    assert [(m.what, m.needed_by) for m in missing] == [("SDM-CAMUS folder",
                                                         ("02_sdm_synthesis",))]
    # only the analysis: nothing external
    assert find_missing(plan(_write(base_profile(), root), root=root, notebooks_dir=NOTEBOOKS,
                             stages=("analysis",), log=lambda m: None)) == []


@pytest.mark.parametrize("options, expected", [
    ({}, "a GPU in the Slurm options: the jobs set device: cuda but no GPU is requested"),
    ({"gpus_per_job": 1}, None),
])
def test_slurm_wants_gpus_asked_of_slurm_not_of_this_machine(tmp_path, options, expected):
    make_inputs(tmp_path)
    prof = base_profile()
    prof["train"]["device"] = "cuda"
    p = plan(_write(prof, tmp_path), root=tmp_path, notebooks_dir=NOTEBOOKS, log=lambda m: None)
    missing = find_missing(p, launcher="slurm", slurm=options, gpu_count=lambda: 0)
    if expected is None:
        assert missing == []
    else:
        assert len(missing) == 1 and expected in missing[0].line()


def test_the_paper_profile_on_a_fresh_root_lists_what_it_lacks(tmp_path):
    """The shipped paper profile, its paths taken from an empty root, online, no GPU."""
    params = tmp_path / "notebooks" / "params"
    params.mkdir(parents=True)
    (params / "paper.yaml").write_text((NOTEBOOKS / "params" / "paper.yaml").read_text())
    p = plan("paper", root=tmp_path, notebooks_dir=NOTEBOOKS, log=lambda m: None)
    missing = find_missing(p, env={}, gpu_count=lambda: 0)
    assert [m.what for m in missing] == ["CAMUS folder", "SDM-CAMUS folder", "CRIS weights",
                                         "a GPU"]
    assert missing[0].where == str(tmp_path / "data/raw/camus")
    assert len(missing[2].needed_by) == 54 and len(missing[3].needed_by) == 109


def test_the_demo_makes_everything_it_reads():
    check_profile_inputs("demo", root=ROOT, gpu_count=lambda: 0)
    check_profile_inputs("demo", root=ROOT, fast_dev_run=2, gpu_count=lambda: 0)


def test_the_rehearsal_passes_once_its_stand_ins_exist(tmp_path):
    """The rehearsal profile (fast_dev_run) with its stand-ins' paths moved into tmp: refused
    before ``build_standins``, accepted after (here: the stand-ins' layout, empty files)."""
    standins = tmp_path / "standins"
    text = (NOTEBOOKS / "params" / "rehearsal.yaml").read_text()
    text = text.replace("data/rehearsal", str(standins))
    prof = yaml.safe_load(text)
    prof["inherits"] = str(NOTEBOOKS / "params" / "paper.yaml")
    path = tmp_path / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(prof))
    with pytest.raises(MissingInputsError) as err:
        check_profile_inputs(path, root=tmp_path, notebooks_dir=NOTEBOOKS, fast_dev_run=2,
                             gpu_count=lambda: 0)
    assert [m.what for m in err.value.missing] == [
        "CAMUS folder", "SDM-CAMUS folder", "CLIPSeg weights (from $ECHO_VLSM_CLIPSEG_WEIGHTS)",
        "CRIS weights"]
    (standins / STANDINS["camus"] / "training").mkdir(parents=True)
    (standins / STANDINS["released"] / "2CH_ED" / "images").mkdir(parents=True)
    (standins / STANDINS["clipseg"]).mkdir()
    (standins / STANDINS["clipseg"] / "config.json").write_text("{}")
    for part in ("rn50", "cris"):
        (standins / STANDINS[part]).parent.mkdir(parents=True, exist_ok=True)
        (standins / STANDINS[part]).write_bytes(b"")
    check_profile_inputs(path, root=tmp_path, notebooks_dir=NOTEBOOKS, fast_dev_run=2,
                             gpu_count=lambda: 0)


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_the_command_refuses_before_any_job(tmp_path, capsys, launcher, monkeypatch):
    """``echo-vlsm reproduce``: exit 2, one message, no kernel started, nothing submitted."""
    import echo_vlsm.pipeline.slurm as slurm

    def never(*a, **k):
        raise AssertionError("submitted")

    monkeypatch.setattr(slurm, "submit", never)
    prof = base_profile()
    for step in prof["steps"].values():
        for key, value in step.items():
            if isinstance(value, str) and "/" in value:
                step[key] = str(tmp_path / value)
    for key in ("real_dir", "synthetic_dir"):
        prof["train"][key] = str(tmp_path / prof["train"][key])
    prof["runs_root"] = str(tmp_path / "runs/t")
    rc = main(["reproduce", "--profile", str(_write(prof, tmp_path)), "--launcher", launcher])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"CAMUS folder {tmp_path}/raw/camus: does not exist" in err
    assert f"SDM-CAMUS folder {tmp_path}/raw/sdm-camus: does not exist" in err
    assert REHEARSAL_HINT in err
    assert not (tmp_path / "runs").exists()  # no job's folder, lock or marker
