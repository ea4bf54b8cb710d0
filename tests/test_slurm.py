"""The Slurm launcher against a real Slurm: munged, slurmctld and slurmd on this machine
(tools/slurm_local.sh), the micro profile submitted through submitit with afterok
dependencies, and the same results as the local runner."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from micro import executions, make_micro

from echo_vlsm import pipeline as P

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [d for d in DAEMONS if shutil.which(d) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Slurm is missing under CI=true: {missing} (.ci/run installs munge, "
                        "slurmctld, slurmd, slurm-client)")
        pytest.skip(f"no Slurm here ({', '.join(missing)} not found; apt-get install munge "
                    "slurmctld slurmd slurm-client)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        pytest.fail("submitit is a dependency of the project; reinstall with `make install`")
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "ECHO_VLSM_SLURMCTLD_PORT": "6927", "ECHO_VLSM_SLURMD_PORT": "6928"}
    script = ROOT / "tools" / "slurm_local.sh"
    up = subprocess.run([str(script), "start", str(folder)], env=env, capture_output=True,
                        text=True, timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run([str(script), "stop", str(folder)], env=env, capture_output=True, timeout=60)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.mark.slow
def test_the_graph_runs_on_slurm_with_dependencies_and_the_local_results(slurm, tmp_path):
    tmp, nbs, make = make_micro(tmp_path / "slurm")
    grid = [{"models": ["cris"], "strategies": ["real", "synth-pt-real-ft"], "prompts": ["p2"],
             "encoders": ["frozen"]}]
    path = make(grid)
    lines = []
    out = P.reproduce(path, notebooks_dir=nbs, root=tmp, launcher="slurm",
                      slurm={"cpus_per_job": 1, "time": 10}, wait=True, log=lines.append)
    print("\n".join(lines))
    jobs = ["01_data_preparation", "cris_synthetic_frozen_p2", "cris_real_frozen_p2",
            "cris_synth-pt-real-ft_frozen_p2", "06_dice_difference_plots"]
    assert sorted(out.submitted) == sorted(jobs) and out.ok
    assert sorted(out.executed) == sorted(jobs)
    ids = {name: out.submitted[name] for name in jobs}
    runs = tmp / "runs" / "micro"
    record = json.loads((runs / "cris_synth-pt-real-ft_frozen_p2" / ".slurm.json").read_text())
    assert record["job_id"] == ids["cris_synth-pt-real-ft_frozen_p2"]
    # afterok on the synthetic run it starts from (and on step 01); the analysis after all
    assert f"afterok:{ids['cris_synthetic_frozen_p2']}:{ids['01_data_preparation']}" == \
        record["dependency"]
    analysis = json.loads((runs / "steps" / ".06_dice_difference_plots.slurm.json").read_text())
    assert analysis["dependency"].startswith("afterany:")
    order = executions(tmp)
    assert sorted(order) == ["cris_real_frozen_p2", "cris_synth-pt-real-ft_frozen_p2",
                             "cris_synthetic_frozen_p2"]
    assert order.index("cris_synthetic_frozen_p2") < order.index("cris_synth-pt-real-ft_frozen_p2")
    # each job ran its notebook with papermill inside Slurm, as the local runner does
    assert (runs / "cris_real_frozen_p2" / "04_train_vlsm.ipynb").is_file()
    logs = list((runs / "slurm").glob("*_log.out"))
    assert len(logs) == len(jobs)
    assert set(P.status(path, root=tmp)["state"]) == {"done"}

    # a second submission finds nothing to do
    again = P.reproduce(path, notebooks_dir=nbs, root=tmp, launcher="slurm", wait=True,
                        log=lambda m: None)
    assert again.submitted == {} and len(again.skipped) == len(jobs)

    # the same micro profile run locally gives the same report
    tmp2, nbs2, make2 = make_micro(tmp_path / "local")
    P.reproduce(make2(grid), notebooks_dir=nbs2, root=tmp2, log=lambda m: None)
    assert (tmp / "paper" / "report.md").read_text().split(": ")[1] == \
        (tmp2 / "paper" / "report.md").read_text().split(": ")[1]


@pytest.mark.slow
def test_a_failed_slurm_job_cancels_what_depends_on_it(slurm, tmp_path):
    tmp, nbs, make = make_micro(tmp_path)
    path = make([{"models": ["clipseg"], "strategies": ["synth-pt-real-ft"], "prompts": ["p1"],
                  "encoders": ["trained"]}], train={"fail_strategy": "synthetic"}, analysis=False)
    out = P.reproduce(path, notebooks_dir=nbs, root=tmp, launcher="slurm", wait=True,
                      keep_going=True, log=lambda m: None)
    assert "clipseg_synthetic_trained_p1" in out.failed
    assert "deliberate failure" in out.failed["clipseg_synthetic_trained_p1"]
    assert "clipseg_synth-pt-real-ft_trained_p1" in out.blocked
    assert executions(tmp) == ["clipseg_synthetic_trained_p1"]
