"""Threads per job on the CPU (``pipeline.execute.cpu_threads`` and the pool's slots): the
cores split between the jobs, never above an ``OMP_NUM_THREADS`` the caller set."""

import os

import pytest

from echo_vlsm.pipeline.execute import _slots, cpu_threads


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("echo_vlsm.pipeline.execute.visible_gpus", lambda: [])


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
