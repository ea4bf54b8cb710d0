"""Threads per job on the CPU (``pipeline.execute.cpu_threads`` and the pool's slots): the
cores split between the jobs, never above an ``OMP_NUM_THREADS`` the caller set."""

import os

import pytest

from echo_vlsm.pipeline import worker
from echo_vlsm.pipeline.execute import _slots, cpu_threads
from echo_vlsm.pipeline.worker import cgroup_memory_limit, memory_limit

GIB = 2**30


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("echo_vlsm.pipeline.execute.visible_gpus", lambda: [])
    monkeypatch.setattr("echo_vlsm.pipeline.execute.memory_limit", lambda: 64 * GIB)


@pytest.mark.parametrize(("jobs", "limit", "expected"), [
    (1, None, 4), (2, None, 2), (3, None, 1), (8, None, 1),  # the cores split
    (1, "1", 1), (2, "1", 1), (1, "3", 3), (1, "16", 4),      # a limit set before wins
    (1, "", 4), (1, "two", 4), (1, "0", 4),                   # not a limit: ignored
])
def test_threads_split_the_cores_under_a_limit_already_set(four_cores, monkeypatch, jobs,
                                                           limit, expected):
    if limit is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", limit)
    assert cpu_threads(jobs) == expected
    n, envs = _slots(jobs, None)
    assert n == jobs and len(envs) == jobs
    assert all(e == {"OMP_NUM_THREADS": str(expected), "MKL_NUM_THREADS": str(expected)}
               for e in envs)


def test_gpu_slots_pin_one_gpu_each(four_cores):
    n, envs = _slots(2, ["0", "1"])
    assert n == 2 and envs == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    with pytest.raises(ValueError, match="only 2 GPUs"):
        _slots(3, ["0", "1"])


@pytest.mark.parametrize(("limit_gib", "jobs", "expected"), [
    (2, 2, 1),     # Binder: make demo's two jobs run one at a time
    (2, 1, 1),
    (1, 2, 1),     # less than one job's worth: still one
    (4, 2, 2),     # Colab's free tier and up: both
    (4, 8, 3),
    (64, 8, 8),
])
def test_cpu_jobs_never_exceed_what_the_memory_limit_holds(four_cores, monkeypatch, limit_gib,
                                                           jobs, expected):
    monkeypatch.setattr("echo_vlsm.pipeline.execute.memory_limit", lambda: limit_gib * GIB)
    said = []
    n, envs = _slots(jobs, None, log=said.append)
    assert n == expected and len(envs) == expected
    assert all(e["OMP_NUM_THREADS"] == str(max(1, 4 // expected)) for e in envs)
    if expected < jobs:
        assert said == [f"  {jobs} jobs at once need about {jobs * 1.2:.1f} GiB; the memory "
                        f"limit here is {limit_gib:.1f} GiB: {expected} at a time"]
    else:
        assert said == []


def test_gpu_slots_ignore_the_cpu_memory_limit(four_cores, monkeypatch):
    monkeypatch.setattr("echo_vlsm.pipeline.execute.memory_limit", lambda: 1 * GIB)
    assert _slots(2, ["0", "1"])[0] == 2


V1 = "4:memory:/process_api/abc\n3:cpuset:/\n0::/\n"   # cgroup v1 (this kind of host)
V2 = "0::/kubepods/pod1/box\n"                          # cgroup v2 (Binder's kind)
NO_LIMIT_V1 = "9223372036854771712\n"


@pytest.mark.parametrize(("own", "files", "expected"), [
    (V2, {"kubepods/pod1/box/memory.max": "max\n", "kubepods/pod1/memory.max": "2147483648\n",
          "kubepods/memory.max": "max\n"}, 2 * GIB),              # the pod's limit, above
    (V2, {"kubepods/pod1/box/memory.max": "1073741824\n",
          "kubepods/pod1/memory.max": "2147483648\n"}, 1 * GIB),   # the smallest one wins
    (V2, {"kubepods/pod1/box/memory.max": "max\n"}, None),          # no limit: the RAM
    (V1, {"memory/memory.limit_in_bytes": NO_LIMIT_V1,
          "memory/process_api/memory.limit_in_bytes": NO_LIMIT_V1,
          "memory/process_api/abc/memory.limit_in_bytes": "2147483648\n"}, 2 * GIB),
    (V1, {"memory/memory.limit_in_bytes": NO_LIMIT_V1,
          "memory/process_api/abc/memory.limit_in_bytes": NO_LIMIT_V1}, None),
    (V1, {"memory/memory.limit_in_bytes": "1073741824\n"}, 1 * GIB),  # the root's, v1
    ("", {}, None),                                                   # nothing readable
])
def test_memory_limit_reads_the_processs_cgroup_else_the_ram(tmp_path, own, files, expected):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mount = tmp_path / "sys-fs-cgroup"
    for name, text in files.items():
        (mount / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / name).write_text(text)
    (tmp_path / "cgroup").write_text(own)
    assert memory_limit(tmp_path / "cgroup", mount) == (ram if expected is None else expected)
    assert memory_limit(tmp_path / "missing", mount) == ram
    assert cgroup_memory_limit(tmp_path / "cgroup", mount) == expected


def test_a_dead_kernel_names_the_memory_limit(monkeypatch):
    class DeadKernelError(Exception):  # nbclient's, by name
        pass

    monkeypatch.setattr(worker, "cgroup_memory_limit", lambda: 2 * GIB)
    text = str(worker._explain(DeadKernelError("Kernel died")))
    assert text == ("the notebook's kernel died: killed by the system, most likely out of "
                    "memory (this job's memory limit: 2.0 GiB); see `dmesg` or the cluster's "
                    "job log (Kernel died)")
    monkeypatch.setattr(worker, "cgroup_memory_limit", lambda: None)
    assert "memory limit" not in str(worker._explain(DeadKernelError("Kernel died")))
    other = ValueError("x")
    assert worker._explain(other) is other
