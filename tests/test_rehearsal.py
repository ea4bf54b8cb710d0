"""The paper profile rehearsed on stand-ins in its real formats (random weights), CPU: the
reduced form of `make rehearsal` (one run that trains, one that only scores, every step).
It proves the paper path end to end: the CAMUS 2019 reader and the study's split, the
released SDM-CAMUS import, CLIPSeg from a save_pretrained folder and CRIS from a community
checkpoint through `pretrained: true`, paper sizes, the paper recipe, every notebook."""

from pathlib import Path

import pytest
import yaml

from echo_vlsm import pipeline as P
from echo_vlsm.pipeline.profiles import REHEARSAL_RUNS_QUICK
from echo_vlsm.rehearsal import build_standins

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_paper_profile_runs_end_to_end_on_stand_ins(tmp_path):
    standins = tmp_path / "standins"
    paths = build_standins(standins, progress=False)
    # the shipped rehearsal profile, its folders moved into tmp
    text = (ROOT / "notebooks" / "params" / "rehearsal.yaml").read_text()
    text = text.replace("data/rehearsal", str(standins)).replace("runs/rehearsal",
                                                                str(tmp_path / "runs"))
    text = text.replace("figures/rehearsal", str(tmp_path / "figures")).replace(
        "paper/rehearsal", str(tmp_path / "paper"))
    prof = yaml.safe_load(text)
    prof["inherits"] = str(ROOT / "notebooks" / "params" / "paper.yaml")
    path = tmp_path / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(prof))
    assert str(paths["camus"]) in text

    out = P.reproduce(path, root=ROOT, only=list(REHEARSAL_RUNS_QUICK), fast_dev_run=2,
                      log=lambda m: None)
    assert out.ok, out.failed
    runs = tmp_path / "runs-fdr"
    for run in REHEARSAL_RUNS_QUICK:
        assert P.run_complete(runs / run), run
    summary = (runs / "clipseg_real_frozen_p1" / "summary.json").read_text()
    assert '"fast_dev_run": 2' in summary
    report = (tmp_path / "paper-fdr" / "report.md").read_text()
    assert "**REHEARSAL** (`--fast-dev-run`)" in report
    # the real thing's folders were never written (only -fdr twins)
    assert not (tmp_path / "runs" / "steps").exists() and not (tmp_path / "paper").exists()
    assert not (standins / "camus-export").exists() and (standins / "camus-export-fdr").is_dir()
