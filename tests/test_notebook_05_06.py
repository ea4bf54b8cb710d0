"""Notebooks 05 and 06 under papermill on a synthetic tree of runs written here."""

import json

import numpy as np
import pandas as pd
import pytest

SAMPLES = [f"patient{i:04d}_{v}_{p}" for i in (1, 2, 3) for v in ("2CH", "4CH") for p in ("ED",)]
LEVEL = {"p0": 45.0, "p1": 85.0}
OFFSET = {"real": 0.0, "synthetic": -6.0, "synth-pt-real-ft": 1.0}
BEST_EPOCH = {"real": 8, "synthetic": 5, "synth-pt-real-ft": 2}


def _write_runs(root):
    rng = np.random.default_rng(0)
    cells = [(m, s, "trained", p) for m in ("clipseg", "cris")
             for s in ("real", "synthetic", "synth-pt-real-ft") for p in ("p0", "p1")]
    cells += [(m, s, "frozen", "p1") for m in ("clipseg", "cris")
              for s in ("real", "synth-pt-real-ft")]
    for model, strategy, encoders, prompt in cells:
        d = root / f"{model}_{strategy}_{encoders}_{prompt}"
        d.mkdir(parents=True)
        base = LEVEL[prompt] + OFFSET[strategy] - (10.0 if encoders == "frozen" else 0.0)
        rows = [dict(model=model, strategy=strategy, encoders=encoders, prompt=prompt,
                     seed=0, real_fraction=1.0, provenance=False, sample=s, structure=st,
                     view=s.split("_")[1], phase="ED",
                     dice=float(np.clip(base + rng.normal(0, 2), 0, 100)), iou=70.0, hd95=4.0)
                for s in SAMPLES for st in ("lv", "myo", "la")]
        pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
        best = BEST_EPOCH[strategy]
        pd.DataFrame({"epoch": range(1, 11), "train_loss": np.linspace(1, 0.2, 10),
                      "val_loss": np.linspace(1, 0.3, 10),
                      "val_dice": np.minimum(np.arange(1, 11) / best, 1) * 0.8,
                      "lr": 1e-3, "seconds": 1.5}).to_csv(d / "history.csv", index=False)
        (d / "summary.json").write_text(json.dumps({
            "best_epoch": best, "best_val_dice": 0.8, "seconds_to_best": best * 1.5,
            "epochs_run": 10, "seconds_total": 15.0, "done": True,
            # one run ended by its cap: the report must name it
            "stopped_by": "epochs" if d.name == "cris_real_frozen_p1" else "patience"}))


@pytest.fixture
def tree(tmp_path):
    runs = tmp_path / "runs" / "t"
    _write_runs(runs)
    return {"profile": "demo", "runs_root": str(runs), "figures_dir": str(tmp_path / "fig"),
            "tables_dir": str(tmp_path / "paper")}


@pytest.mark.notebook
def test_notebook_05_freeze_ablation(run_notebook, tree, tmp_path):
    nb = run_notebook("05_freeze_ablation.ipynb", tree)
    for name in ("table2.md", "table2.tex", "table2.csv"):
        assert (tmp_path / "paper" / name).is_file()
    t2 = pd.read_csv(tmp_path / "paper" / "table2.csv")
    assert set(t2["strategy"]) == {"real", "synth-pt-real-ft"} and (t2["n"] == 18).all()
    assert t2.set_index(["strategy", "model"]).loc[("real", "cris"), "paper_mean"] == 88.41
    assert (tmp_path / "fig" / "freeze_difference.png").stat().st_size > 1000
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the gradient check: transformers' forward leaves the encoders without gradient
    assert "transformers forward (the study)" in text


@pytest.mark.notebook
def test_notebook_06_dice_difference_plots(run_notebook, tree, tmp_path):
    run_notebook("06_dice_difference_plots.ipynb", tree)
    t1 = pd.read_csv(tmp_path / "paper" / "table1.csv").set_index(["strategy", "model", "prompt"])
    assert len(t1) == 12 and (t1["n"] == 18).all()
    assert t1.loc[("real", "cris", "p1"), "dice_mean"] == pytest.approx(85.0, abs=2.0)
    for name in ("strategy_difference", "learning_curves", "per_structure"):
        assert (tmp_path / "fig" / f"{name}.png").is_file()
        assert (tmp_path / "fig" / f"{name}.pdf").is_file()
    report = (tmp_path / "paper" / "report.md").read_text()
    assert report.startswith("# Reproduction report: demo profile")
    for heading in ("## P0 (empty prompt) versus P1", "## Table 1", "## Table 2",
                    "## Strategy minus real", "## Frozen minus trained", "## Paired tests",
                    "## Convergence", "## Per structure"):
        assert heading in report
    assert "far below P1 (at least 10 dice points), holds in every cell run" in report
    assert "![Mean dice of each strategy minus real](../fig/strategy_difference.png)" in report
    assert "| CRIS synth-pt-real-ft P2 | CRIS real P2 | greater | 600 | 0.34 | 8.30e-06 |" in report
    # speed-up by construction: best epoch 8 (real) / 2 (synth-pt-real-ft) = 4x
    # model, pairs (trained p0, p1; frozen p1), epoch, match, time speed-ups, at cap, study
    assert "| cris | 3 | 4.00 | 4.00 | 4.00 | 0 | 4.55 |" in report
    assert "**Demo profile**" in report
    # how every run ended: 16 trained runs, one at its cap, named
    assert "## How every run ended" in report
    assert ("15 of 16 runs stopped by early stopping; 1 stopped at the epoch cap "
            "(cris_real_frozen_p1)") in report
    assert "| cris_real_frozen_p1 | cris | real | frozen | p1 | 10 | 8 | 2 | epochs |" in report


@pytest.mark.notebook
def test_notebook_06_ignores_runs_beyond_the_study(run_notebook, tmp_path):
    """A folder that also holds seed replicates, real fractions, mixed and U-Net runs (the
    demo-beyond profile shares runs/demo with the demo profile) gives notebook 06 the same
    Table 1, figures and report, byte for byte."""
    from tests.tiny_runs import write_beyond_runs

    out = {}
    for name, extra in (("plain", False), ("extra", True)):
        runs = tmp_path / name / "runs" / "t"
        _write_runs(runs)
        if extra:
            assert len(write_beyond_runs(runs, samples=SAMPLES)) > 10
        run_notebook("06_dice_difference_plots.ipynb", {
            "profile": "demo", "runs_root": str(runs), "figures_dir": str(tmp_path / name / "fig"),
            "tables_dir": str(tmp_path / name / "paper")})
        out[name] = {f"paper/{f}": (tmp_path / name / "paper" / f).read_bytes()
                     for f in ("table1.csv", "table1.md", "table1.tex", "report.md")}
        out[name].update({f"fig/{f}.png": (tmp_path / name / "fig" / f"{f}.png").read_bytes()
                          for f in ("strategy_difference", "learning_curves", "per_structure")})
    for key, value in out["plain"].items():
        assert out["extra"][key] == value, key
