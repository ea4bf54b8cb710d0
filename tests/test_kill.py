"""``reproduce`` killed at random points (SIGKILL of the runner, as a node failure or the
OOM killer would): nothing it started stays alive, no temporary file survives the resumed
run, and the results are the same bytes as those of an uninterrupted run.

The profile is the real chain at micro size: the phantom (6 patients, 64 px), a tiny SDM
trained for a few steps, the task files, one tiny training run.
"""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from echo_vlsm.pipeline import lock_holder

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = "import sys\nfrom echo_vlsm import pipeline as P\nP.reproduce(sys.argv[1])\n"


def micro_profile(tmp: Path) -> Path:
    data = tmp / "data"
    prof = {
        "profile": "kill", "runs_root": str(tmp / "runs"),
        "env": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        "steps": {
            "01_data_preparation": {"source": "phantom", "n_patients": 6, "seed": 0,
                                    "raw_dir": str(data / "raw"), "out_dir": str(data / "real"),
                                    "size": 64, "workers": 2},
            "02_sdm_synthesis": {"real_dir": str(data / "real"),
                                 "out_dir": str(data / "synthetic"),
                                 "sdm_dir": str(tmp / "runs" / "sdm"), "size": "tiny",
                                 "train_steps": 6, "sampling_steps": 2, "n_per_map": 1,
                                 "max_maps": 4, "device": "cpu", "timing_samplers": []},
            "03_prompt_generation": {"real_dir": str(data / "real"),
                                     "synthetic_dir": str(data / "synthetic")},
        },
        "train": {"size": "tiny", "epochs": 2, "batch_size": 8, "device": "cpu",
                  "precision": "fp32", "real_dir": str(data / "real"),
                  "synthetic_dir": str(data / "synthetic")},
        "grid": [{"models": ["clipseg"], "strategies": ["real"], "prompts": ["p1"],
                  "encoders": ["trained"]}],
    }
    path = tmp / "kill.yaml"
    path.write_text(yaml.safe_dump(prof))
    return path


def start(path: Path, tag: str) -> subprocess.Popen:
    env = {**os.environ, "ECHO_VLSM_KILL_TEST": tag, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", REPRODUCE, str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def tagged(tag: str) -> list[int]:
    """Processes that inherited the test's tag (the runner and everything below it)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"ECHO_VLSM_KILL_TEST={tag}".encode() in (entry / "environ").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def results(tmp: Path) -> dict[str, str]:
    """Hashes of what the chain produced: images, labels, masks, records, task files, the SDM
    and the run's weights and metrics (not logs, notebooks, caches, nor the two records of
    where and how long: synthesis.json's timings, the export manifest's source paths)."""
    keep = []
    for p in sorted((tmp / "data").rglob("*")):
        if (p.is_file() and ".cache" not in p.parts and p.suffix in (".png", ".csv", ".json")
                and p.name not in ("synthesis.json", ".export_manifest.json")):
            keep.append(p)
    run = tmp / "runs" / "clipseg_real_trained_p1"
    keep += [run / "metrics.csv", run / "model.safetensors", tmp / "runs" / "sdm" /
             "model.safetensors"]
    return {str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest() for p in keep}


@pytest.mark.slow
def test_killed_runner_leaves_no_process_no_temp_file_and_the_same_results(tmp_path):
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    ref = start(micro_profile(ref_dir), uuid.uuid4().hex)
    assert ref.wait(timeout=600) == 0
    reference = results(ref_dir)
    assert len(reference) > 50

    work = tmp_path / "killed"
    work.mkdir()
    path = micro_profile(work)
    rng = random.Random(0)
    locks = [work / "runs" / "steps" / ".01_data_preparation.lock",
             work / "runs" / "steps" / ".02_sdm_synthesis.lock",
             work / "runs" / "clipseg_real_trained_p1" / ".job.lock"]
    for lock in locks:  # a kill at a random moment inside 01, inside 02, inside the run
        tag = uuid.uuid4().hex
        proc = start(path, tag)
        deadline = time.monotonic() + 300
        while lock_holder(lock) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, f"the runner ended before {lock.name} was taken"
        time.sleep(rng.uniform(0.5, 3.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert tagged(tag) == [], f"processes survived the kill inside {lock.name}"
    final = start(path, uuid.uuid4().hex)
    assert final.wait(timeout=600) == 0
    assert not [p for p in work.rglob("*.tmp")], "temporary files survived"
    assert results(work) == reference
