"""benchmarks/gpu_check.sh, the GPU session's one script, runs its steps on the CPU at tiny
size (--cpu): each benchmark starts, measures and exits cleanly."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_at_tiny_size_on_the_cpu():
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + (ROOT / "benchmarks" / "gpu_check.log").read_text()
    assert "gpu_check (cpu): all passed" in out.stdout
    for step in ("train_step", "epoch", "sdm"):
        assert f"== {step}:" in out.stdout
