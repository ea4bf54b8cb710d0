"""Process pools for the data steps (phantom writing, dataset export), and the one loop that
runs a list of jobs serially or on a pool with a progress bar.

Every pool starts the same way: ``forkserver`` where the platform has it (forking a process
that runs threads, such as a Jupyter kernel or torch, can deadlock), ``spawn`` elsewhere;
each worker runs OpenCV and SimpleITK on one thread, since the pool provides the parallelism.

Examples::

    >>> from operator import neg
    >>> results = {}
    >>> run_jobs(neg, [(1,), (2,)], workers=0, on_done=lambda args, r: results.update({args: r}))
    >>> results
    {(1,): -1, (2,): -2}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

from tqdm.auto import tqdm


def pool_context():
    """The multiprocessing context of the project's pools: ``forkserver``, else ``spawn``."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def worker_init() -> None:
    """Run in each worker at start: one thread for OpenCV and SimpleITK."""
    import cv2
    import SimpleITK as sitk

    cv2.setNumThreads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes (``pool_context``, ``worker_init``)."""
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    return ProcessPoolExecutor(int(workers), mp_context=pool_context(), initializer=worker_init)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    workers: int,
    on_done: Callable[[tuple, Any], None] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    checkpoint: Callable[[], None] | None = None,
    checkpoint_every: float = 5.0,
) -> None:
    """Call ``fn(*args)`` for each ``args`` in ``jobs``, in this process (``workers`` <= 1 or
    a single job) or on a ``process_pool``, with a tqdm bar (hidden when not a TTY).

    ``on_done(args, result)`` runs in this process as each job finishes (in any order on a
    pool); ``checkpoint()`` at most every ``checkpoint_every`` seconds while jobs run, so a
    caller can save its progress. ``total`` counts jobs done before (the bar starts at
    ``total - len(jobs)``). A job's error is raised here after the pool's queued jobs are
    cancelled; finished jobs have had their ``on_done``.
    """
    total = len(jobs) if total is None else total
    bar = tqdm(total=total, initial=total - len(jobs), desc=desc, unit=unit, disable=None)
    last = time.monotonic()

    def finished(args, result):
        nonlocal last
        if on_done is not None:
            on_done(args, result)
        bar.update()
        if checkpoint is not None and time.monotonic() - last > checkpoint_every:
            checkpoint()
            last = time.monotonic()

    try:
        if workers <= 1 or len(jobs) <= 1:
            for args in jobs:
                finished(args, fn(*args))
            return
        with process_pool(min(workers, len(jobs))) as pool:
            pending = {pool.submit(fn, *args): args for args in jobs}
            try:
                while pending:
                    done, _ = wait(pending, timeout=checkpoint_every,
                                   return_when=FIRST_EXCEPTION)
                    for fut in done:
                        finished(pending.pop(fut), fut.result())  # re-raises a worker's error
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
