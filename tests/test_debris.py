"""No debris, no silent pool failures: temporary files of atomic writes that a kill left are
cleaned when the job runs again; atomically written files get a normal file's mode; a dead
pool worker, or a pool started where workers cannot start, says why and what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from echo_vlsm.io import atomic_path, clean_temp_files, host_tag, write_png, write_text_atomic
from echo_vlsm.parallel import PoolError, run_jobs

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_png(tmp_path / "b.png", __import__("numpy").zeros((2, 2), "uint8"))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.png", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def _live_pid() -> tuple[int, subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    return proc.pid, proc


# (name of a file in the folder, removed by clean_temp_files?); other hosts' files and old
# files: tests/test_hardening.py
TEMP_CASES = [
    (".state.pt.99999999@{host}-k2j4_x.tmp", True),    # its writer is gone (no such process)
    (".model.safetensors.ab12cd34.tmp", False),  # an older version's name: kept until 24 h old
    ("sub/.patient0001_2CH_ED.png.99999999@{host}-abcdef.tmp", True),  # recursive
    (".metrics.csv.{own}@{host}-abcdef.tmp", False),   # this process may be writing it
    (".metrics.csv.{live}@{host}-abcdef.tmp", False),  # a running process is writing it
    ("model.safetensors", False),               # not a temporary file
    (".export_manifest.json", False),           # hidden, but no temporary file
    (".patient0001.tmp", False),                # the phantom's own partial folder name
]


def test_clean_temp_files_removes_what_a_kill_left(tmp_path):
    pid, proc = _live_pid()
    try:
        names = [n.format(own=os.getpid(), live=pid, host=host_tag()) for n, _ in TEMP_CASES]
        for name in names:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text("x")
        assert clean_temp_files(tmp_path) == [tmp_path / names[0]]
        removed = clean_temp_files(tmp_path, recursive=True)
        assert removed == [tmp_path / names[2]]
        for name, (_, gone) in zip(names, TEMP_CASES):
            assert (tmp_path / name).exists() is not gone, name
    finally:
        proc.kill()
        proc.wait()
    assert clean_temp_files(tmp_path / "no such folder") == []


def test_a_write_in_progress_is_not_cleaned(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"half")
        assert clean_temp_files(tmp_path) == [] and tmp.exists()
    assert (tmp_path / "a.bin").read_bytes() == b"half"


@pytest.mark.parametrize("writer", ["export", "phantom"])
def test_data_jobs_clean_their_folder_when_they_start(tmp_path, writer, phantom_root):
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.data.export import export_dataset
    from echo_vlsm.data.phantom import write_phantom

    if writer == "phantom":
        root = write_phantom(tmp_path / "raw", n_patients=2, workers=0)
        debris = (root / "database_split"
                  / f".subgroup_training.txt.99999999@{host_tag()}-abcdef.tmp")
        debris.write_text("x")
        write_phantom(root, n_patients=2, workers=0)
    else:
        records = read_camus(phantom_root)[:2]
        out = export_dataset(records, tmp_path / "out", size=32, workers=0)
        debris = (out / "images" / "train"
                  / f".{records[0].stem}.png.99999999@{host_tag()}-abcdef.tmp")
        debris.parent.mkdir(parents=True, exist_ok=True)
        debris.write_bytes(b"x" * 100)
        export_dataset(records, out, size=32, workers=0)
    assert not debris.exists()


# --------------------------------------------------------------------------- pools


def _die(n):
    if n == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return n


def test_a_killed_worker_says_so_and_how_to_go_on():
    with pytest.raises(PoolError) as info:
        run_jobs(_die, [(0,), (1,), (2,)], workers=2)
    text = str(info.value)
    assert "a worker process of the pool died (killed by SIGKILL)" in text
    assert "out-of-memory killer" in text and "workers=1" in text


def test_the_workers_a_broken_pool_terminates_are_not_called_a_cause():
    """When a worker dies, the pool sends SIGTERM to the others: which of them the message
    lists depends on timing (seen under load), so only a death it did not cause is named."""
    from types import SimpleNamespace

    from echo_vlsm.parallel import _broken_message

    def pool(*codes):
        return SimpleNamespace(_processes={i: SimpleNamespace(exitcode=c)
                                           for i, c in enumerate(codes)})

    killed = _broken_message(pool(-signal.SIGKILL, -signal.SIGTERM, None), RuntimeError("x"))
    assert "(killed by SIGKILL)" in killed and "SIGTERM" not in killed
    assert "(killed by SIGTERM)" in _broken_message(pool(-signal.SIGTERM), RuntimeError("x"))
    assert "(exit code 3)" in _broken_message(pool(3, -signal.SIGTERM), RuntimeError("x"))


SCRIPT = """
    from echo_vlsm.parallel import run_jobs
    from operator import neg
    {call}
"""
# (how the pool is started, by a script, what it prints or the error says)
POOL_CASES = [
    ("script-without-guard", "file", "run_jobs(neg, [(1,), (2,)], workers=2)",
     r"line 4: starts a process pool at the top level of a script without an "
     r"'if __name__ == \"__main__\":' guard.*or pass workers=1"),
    ("standard-input", "stdin", "run_jobs(neg, [(1,), (2,)], workers=2)",
     r"the main script \(<stdin>\) is not a file \(read from standard input\?\).*workers=1"),
    ("script-with-guard", "file",
     "if __name__ == '__main__':\n        run_jobs(neg, [(1,), (2,)], workers=2); print('ran')",
     r"^ran$"),
    ("stdin-one-worker", "stdin", "run_jobs(neg, [(1,), (2,)], workers=1); print('ran')",
     r"^ran$"),
]


@pytest.mark.parametrize("case, how, call, expected", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_from_a_script_names_cause_and_fix(tmp_path, case, how, call, expected):
    code = textwrap.dedent(SCRIPT.format(call=call))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if how == "file":
        (tmp_path / "job.py").write_text(code)
        proc = subprocess.run([sys.executable, "job.py"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    else:
        proc = subprocess.run([sys.executable, "-"], input=code, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    out = (proc.stdout + proc.stderr).strip()
    if expected == r"^ran$":
        assert proc.returncode == 0 and proc.stdout.strip() == "ran", out
    else:
        assert proc.returncode != 0 and "PoolError" in out, out
        assert __import__("re").search(expected, out), out
