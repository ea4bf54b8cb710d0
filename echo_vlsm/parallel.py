"""Process pools for the data steps (phantom writing, dataset export).

One helper so that every pool starts the same way: ``forkserver`` where the platform has it
(forking a process that runs threads, such as a Jupyter kernel or torch, can deadlock),
``spawn`` elsewhere; each worker runs OpenCV and SimpleITK on one thread, since the pool
provides the parallelism.

Examples::

    with process_pool(4) as pool:
        results = list(pool.map(work, items))
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor


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
