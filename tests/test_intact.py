"""Complete means intact: a run folder (and the SDM's) is complete only when the files its
summary vouches for match the recorded size and SHA-256; ``fit`` and ``train_sdm`` redo what
is damaged; every checkpoint error names its file.

The cases are in tables: how the folder is damaged, and what ``run_problem`` says.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from echo_vlsm import grid as G
from echo_vlsm.errors import PathError
from echo_vlsm.io import host_tag

RUN = "cris_real_trained_p1"


def make_run(root: Path, name: str = RUN, record: bool = True) -> Path:
    """A run folder as ``fit`` leaves it: weights, config, history, metrics, summary."""
    run = root / name
    run.mkdir(parents=True)
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(run / G.WEIGHTS_FILE))
    (run / G.CONFIG_FILE).write_text('{"model": "cris"}\n')
    (run / G.HISTORY_FILE).write_text(",".join(G.HISTORY_COLUMNS) + "\n1,0.5,0.5,50,0.001,1,1\n")
    (run / G.METRICS_FILE).write_text(",".join(G.METRIC_COLUMNS) + "\n")
    summary = {"best_epoch": 1, "done": True}
    if record:
        summary[G.FILES_KEY] = G.file_records(run, G.run_files("real"))
    (run / G.SUMMARY_FILE).write_text(json.dumps(summary))
    return run


def truncate(path: Path, n: int = 10) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-n])


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def set_summary(run: Path, **changes) -> None:
    summary = json.loads((run / G.SUMMARY_FILE).read_text())
    summary.update(changes)
    (run / G.SUMMARY_FILE).write_text(json.dumps(summary))


# (id, record files in the summary, damage(run), deep, what run_problem says; None: intact)
CASES = [
    ("intact", True, lambda r: None, False, None),
    ("weights-truncated", True, lambda r: truncate(r / G.WEIGHTS_FILE), False,
     r"^damaged: model.safetensors \(size \d+ bytes, expected \d+\)$"),
    ("weights-byte-flipped", True, lambda r: flip_byte(r / G.WEIGHTS_FILE), False,
     r"^damaged: model.safetensors \(sha256 differs from the one recorded in summary.json\)$"),
    ("weights-flipped-same-mtime-deep", True,
     lambda r: flip_byte(r / G.WEIGHTS_FILE, keep_mtime=True), True,
     r"^damaged: model.safetensors \(sha256 differs"),
    ("weights-missing", True, lambda r: (r / G.WEIGHTS_FILE).unlink(), False,
     r"^missing: model.safetensors$"),
    ("metrics-missing", True, lambda r: (r / G.METRICS_FILE).unlink(), False,
     r"^missing: metrics.csv$"),
    ("history-truncated", True, lambda r: truncate(r / G.HISTORY_FILE, 3), False,
     r"^damaged: history.csv \(size"),
    ("not-done", True, lambda r: set_summary(r, done=False), False,
     r"^incomplete: summary.json has no done: true$"),
    ("summary-not-json", True, lambda r: (r / G.SUMMARY_FILE).write_text("{"), False,
     r"^damaged: summary.json \(not readable JSON"),
    ("summary-no-summary", True, lambda r: (r / G.SUMMARY_FILE).unlink(), False,
     r"^missing: summary.json$"),
    ("files-record-broken", True, lambda r: set_summary(r, files={"metrics.csv": 3}), False,
     r"^damaged: summary.json \(its record of metrics.csv"),
    # a summary without the record of its files vouches for nothing
    ("summary-without-files", False, lambda r: None, False,
     r"^damaged: summary.json \('files' is not a record of files\)$"),
]


@pytest.mark.parametrize("case, record, damage, deep, expected", CASES,
                         ids=[c[0] for c in CASES])
def test_run_problem(tmp_path, case, record, damage, deep, expected):
    run = make_run(tmp_path, record=record)
    damage(run)
    problem = G.run_problem(run, deep=deep)
    if expected is None:
        assert problem is None and G.run_complete(run)
    else:
        assert problem is not None and __import__("re").search(expected, str(problem)), problem
        assert problem.kind.value == str(problem).split(":")[0]  # the kind leads the message
        if not deep:
            assert not G.run_complete(run)


# (damage(run), kind, file, about): what readers branch on
KINDS = [
    (lambda r: (r / G.WEIGHTS_FILE).unlink(), G.ProblemKind.MISSING, G.WEIGHTS_FILE, None),
    (lambda r: truncate(r / G.HISTORY_FILE, 3), G.ProblemKind.DAMAGED, G.HISTORY_FILE, None),
    (lambda r: set_summary(r, done=False), G.ProblemKind.INCOMPLETE, G.SUMMARY_FILE, None),
    (lambda r: set_summary(r, files={G.WEIGHTS_FILE: 3}), G.ProblemKind.DAMAGED,
     G.SUMMARY_FILE, G.WEIGHTS_FILE),
]


@pytest.mark.parametrize("damage, kind, file, about", KINDS)
def test_problems_are_typed_values(tmp_path, damage, kind, file, about):
    run = make_run(tmp_path)
    damage(run)
    problem = G.run_problem(run)
    assert (problem.kind, problem.file, problem.about) == (kind, file, about)
    assert problem.concerns(about or file) and not problem.concerns(G.CONFIG_FILE)
    assert str(problem).startswith(f"{kind.value}: {file}")


def test_file_records_are_size_and_sha256(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    rec = G.file_records(tmp_path, ["a.txt"])["a.txt"]
    assert rec["size"] == 3
    assert rec["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --------------------------------------------------------------------------- checkpoint errors


def _garbage(path: Path, data: bytes = b"\x89garbage, not a checkpoint") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _truncated_safetensors(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(100)}, str(path))
    truncate(path, 50)
    return path


def _train_load_weights(tmp):
    from echo_vlsm.train.checkpoint import load_weights
    path = _truncated_safetensors(tmp / "run" / "model.safetensors")
    load_weights(torch.nn.Linear(2, 2), path)
    return path


def _train_load_state(tmp):
    from echo_vlsm.train.checkpoint import load_state
    path = _garbage(tmp / "run" / "state.pt")
    load_state(path)
    return path


def _sdm_load_truncated(tmp):
    from echo_vlsm.sdm.diffusion import load_sdm
    path = _truncated_safetensors(tmp / "sdm" / "model.safetensors")
    load_sdm(path.parent, device="cpu")
    return path


def _sdm_load_garbage(tmp):
    from echo_vlsm.sdm.diffusion import load_sdm
    path = _garbage(tmp / "sdm" / "other.safetensors", b"\x10" + b"\0" * 7 + b'{"a": "b"}' * 2)
    load_sdm(path, device="cpu")
    return path


def _sdm_state(tmp):
    from echo_vlsm.sdm.diffusion import SDMConfig
    from echo_vlsm.sdm.diffusion.checkpoints import read_resume_state
    path = _garbage(tmp / "sdm" / "state.pt")
    read_resume_state(path.parent, SDMConfig())
    return path


def _sdm_config(tmp):
    from echo_vlsm.sdm.diffusion import SDMConfig
    from echo_vlsm.sdm.diffusion.checkpoints import read_resume_state
    (tmp / "sdm").mkdir()
    torch.save({"step": 1, "model": {}, "ema": {}}, tmp / "sdm" / "state.pt")
    path = _garbage(tmp / "sdm" / "config.json", b"{not json")
    read_resume_state(path.parent, SDMConfig())
    return path


def _foreign_weights(tmp):
    from echo_vlsm.models.weights import read_state_dict
    path = _truncated_safetensors(tmp / "weights" / "cris.safetensors")
    read_state_dict(path)
    return path


# (id, call(tmp) -> the file, raising; what the message says after "<file>: ")
CHECKPOINT_CASES = [
    ("train-weights-truncated", _train_load_weights, r"damaged weights file \(size"),
    ("train-state-garbage", _train_load_state, r"cannot read the training state .*delete it"),
    ("sdm-weights-truncated", _sdm_load_truncated, r"damaged SDM checkpoint \(size"),
    ("sdm-weights-garbage", _sdm_load_garbage, r"damaged SDM checkpoint|not a readable SDM"),
    ("sdm-state-garbage", _sdm_state, r"cannot read the SDM's resume state .*delete it"),
    ("sdm-config-garbage", _sdm_config, r"cannot read the SDM run's config .*delete state.pt"),
    ("foreign-weights-truncated", _foreign_weights, r"not a readable safetensors file"),
]


@pytest.mark.parametrize("case, call, message", CHECKPOINT_CASES,
                         ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_errors_name_their_file(tmp_path, case, call, message):
    files = {
        "train-weights-truncated": tmp_path / "run" / "model.safetensors",
        "train-state-garbage": tmp_path / "run" / "state.pt",
        "sdm-weights-truncated": tmp_path / "sdm" / "model.safetensors",
        "sdm-weights-garbage": tmp_path / "sdm" / "other.safetensors",
        "sdm-state-garbage": tmp_path / "sdm" / "state.pt",
        "sdm-config-garbage": tmp_path / "sdm" / "config.json",
        "foreign-weights-truncated": tmp_path / "weights" / "cris.safetensors",
    }
    with pytest.raises((ValueError, PathError)) as info:
        call(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{files[case]}: "), text
    assert __import__("re").search(message, text), text


# --------------------------------------------------------------------------- fit redoes damage


@pytest.mark.slow
def test_fit_redoes_a_damaged_run_to_the_same_result(task_dataset, tmp_path, capsys):
    from echo_vlsm.train import TrainConfig, fit

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(model="cris", size="tiny", prompt="p1", strategy="real",
                          encoders="trained", epochs=2, batch_size=4, lr=1e-3, seed=0,
                          device="cpu", real_dir=str(task_dataset),
                          synthetic_dir=str(task_dataset), runs_root=str(tmp_path),
                          keep_state=True)  # damaged metrics are then scored from state.pt
        fit(cfg, progress=False)
        run = cfg.run_dir
        first = G.file_records(run, G.run_files("real"))
        assert json.loads((run / G.SUMMARY_FILE).read_text())[G.FILES_KEY].keys() == first.keys()
        assert G.run_problem(run, deep=True) is None

        # truncated weights: not complete; fit trains again, to the same weights and scores
        truncate(run / G.WEIGHTS_FILE, 1000)
        (run / f".{G.STATE_FILE}.99999999@{host_tag()}-abc123.tmp").write_bytes(b"left by a kill")
        old = run / f".{G.METRICS_FILE}.x1y2z3.tmp"  # an older version's, a day old
        old.write_bytes(b"older version's temp file")
        os.utime(old, (old.stat().st_mtime - 25 * 3600,) * 2)
        assert not G.run_complete(run)
        fit(cfg, progress=False)
        assert "damaged: model.safetensors" in capsys.readouterr().out
        again = G.file_records(run, G.run_files("real"))
        for name in (G.WEIGHTS_FILE, G.METRICS_FILE):  # history.csv holds timings
            assert again[name]["sha256"] == first[name]["sha256"], name
        assert not list(run.glob(".*.tmp"))
        assert G.run_problem(run, deep=True) is None

        # damaged metrics: scored again from the saved model, weights untouched
        mtime = (run / G.WEIGHTS_FILE).stat().st_mtime_ns
        (run / G.METRICS_FILE).write_text("model,strategy\n")
        assert str(G.run_problem(run)).startswith("damaged: metrics.csv")
        fit(cfg, progress=False)
        assert "scoring again" in capsys.readouterr().out
        assert (run / G.WEIGHTS_FILE).stat().st_mtime_ns == mtime
        assert G.sha256_file(run / G.METRICS_FILE) == first[G.METRICS_FILE]["sha256"]

        # without state.pt (what keep_state=False leaves) damaged metrics mean training
        # again, to the same weights and metrics
        (run / G.STATE_FILE).unlink()
        (run / G.METRICS_FILE).write_text("model,strategy\n")
        fit(cfg, progress=False)
        assert "training again" in capsys.readouterr().out
        for name in (G.WEIGHTS_FILE, G.METRICS_FILE):
            assert G.sha256_file(run / name) == first[name]["sha256"], name
    finally:
        torch.set_num_threads(n)


def test_synth_pt_real_ft_names_the_damage_of_its_source(task_dataset, tmp_path):
    from echo_vlsm.train import MissingRunError, TrainConfig, fit

    cfg = TrainConfig(model="cris", size="tiny", prompt="p1", strategy="synth-pt-real-ft",
                      encoders="trained", device="cpu", real_dir=str(task_dataset),
                      synthetic_dir=str(task_dataset), runs_root=str(tmp_path))
    source = make_run(tmp_path, "cris_synthetic_trained_p1")
    truncate(source / G.WEIGHTS_FILE)
    with pytest.raises(MissingRunError, match=r"not complete and intact \(damaged: "
                                              r"model.safetensors \(size"):
        fit(cfg, progress=False)


# --------------------------------------------------------------------------- the SDM


@pytest.mark.slow
def test_train_sdm_rebuilds_damaged_weights_from_its_state(tmp_path):
    from sdm_data import write_echo_dataset

    from echo_vlsm.sdm.diffusion import SDMConfig, load_sdm, train_sdm
    from echo_vlsm.sdm.diffusion.checkpoints import sdm_problem, weights_problem

    dataset = write_echo_dataset(tmp_path / "ds", n_patients=3, size=64)
    cfg = SDMConfig(train_steps=2, batch_size=2, checkpoint_every=2, sample_every=0, seed=1,
                    device="cpu")
    run = train_sdm(dataset, tmp_path / "sdm", cfg, progress=False)
    weights = run / "model.safetensors"
    digest = G.sha256_file(weights)
    summary = json.loads((run / "summary.json").read_text())
    assert summary[G.FILES_KEY]["model.safetensors"]["sha256"] == digest
    assert sdm_problem(run) is None

    truncate(weights, 100)
    (run / f".state.pt.99999999@{host_tag()}-abcdef.tmp").write_bytes(b"left by a kill")
    assert str(weights_problem(run)).startswith("damaged: model.safetensors (size")
    with pytest.raises(PathError, match="damaged SDM checkpoint") as info:
        load_sdm(run, device="cpu")
    assert info.value.path == weights
    train_sdm(dataset, run, cfg, progress=False)  # not a trained SDM: written again
    assert G.sha256_file(weights) == digest
    assert not list(run.glob(".*.tmp"))
    assert weights_problem(run) is None and load_sdm(run, device="cpu").step == 2
