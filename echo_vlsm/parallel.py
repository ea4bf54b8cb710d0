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

import ast
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import FrameType
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


class PoolError(RuntimeError):
    """The process pool cannot run the jobs (a worker died, or workers cannot start from
    here); the message names the cause and the fix."""


_FIX = "pass workers=1 to run the jobs in this process"


def _main_script() -> Path | None:
    """The file of the ``__main__`` module when it is a script run by path, else None."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    file = getattr(main, "__file__", None)
    if spec is not None and getattr(spec, "name", None) or not isinstance(file, str):
        return None  # python -m ..., an interactive session, a Jupyter kernel
    return Path(file)


def _guarded(script: Path, lineno: int) -> bool:
    """Whether line ``lineno`` of ``script`` lies inside ``if __name__ == "__main__":``."""
    try:
        tree = ast.parse(script.read_text(encoding="utf-8", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return True  # cannot tell: do not stand in the way
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) \
                and "__main__" in ast.unparse(node.test):
            if any(child.lineno <= lineno <= (child.end_lineno or child.lineno)
                   for child in node.body):
                return True
    return False


def start_problem() -> str | None:
    """Why worker processes cannot start from the calling code, or None.

    ``forkserver`` and ``spawn`` workers import the main script again: one read from
    standard input cannot be, and one that calls the pool at its top level without an
    ``if __name__ == "__main__":`` guard would start the work again in every worker."""
    script = _main_script()
    if script is None or pool_context().get_start_method() == "fork":
        return None
    if not script.is_file():
        return (f"the main script ({script}) is not a file (read from standard input?), so "
                "worker processes cannot import it; " + _FIX + ", or save the script to a "
                "file and run that")
    main_globals = vars(sys.modules["__main__"])
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            if not _guarded(script, frame.f_lineno):
                return (f"{script}, line {frame.f_lineno}: starts a process pool at the top "
                        "level of a script without an 'if __name__ == \"__main__\":' guard, "
                        "so every worker would run the script again; put the call under that "
                        "guard, or " + _FIX)
            return None
        frame = frame.f_back
    return None


def _broken_message(pool: ProcessPoolExecutor, exc: BaseException) -> str:
    """What a ``BrokenProcessPool`` means, with the dead workers' exit codes when known."""
    codes = []
    for proc in list(getattr(pool, "_processes", {}).values()):
        code = proc.exitcode
        if code not in (None, 0):
            try:
                codes.append(f"killed by {signal.Signals(-code).name}" if code < 0
                             else f"exit code {code}")
            except ValueError:
                codes.append(f"exit code {code}")
    # a broken pool terminates its other workers (SIGTERM): not a cause when another is known
    causes = set(codes) - {"killed by SIGTERM"} or set(codes)
    how = f" ({', '.join(sorted(causes))})" if causes else ""
    oom = (" SIGKILL is what the out-of-memory killer sends: use fewer workers."
           if any("SIGKILL" in c for c in codes) else "")
    return (f"a worker process of the pool died{how}: {str(exc).rstrip('.')}.{oom} Jobs "
            "that finished are kept; run again to resume, or " + _FIX
            + " (its error, if any, is then raised directly)")


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

    Raises:
        PoolError: a worker died (``BrokenProcessPool``: killed, out of memory, could not
            start), or workers cannot start from the calling script (``start_problem``).
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
        problem = start_problem()
        if problem is not None:
            raise PoolError(problem)
        with process_pool(min(workers, len(jobs))) as pool:
            pending = {pool.submit(fn, *args): args for args in jobs}
            try:
                while pending:
                    done, _ = wait(pending, timeout=checkpoint_every,
                                   return_when=FIRST_EXCEPTION)
                    for fut in done:
                        finished(pending.pop(fut), fut.result())  # re-raises a worker's error
            except BrokenProcessPool as exc:
                message = _broken_message(pool, exc)
                pool.shutdown(wait=True, cancel_futures=True)
                raise PoolError(message) from exc
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()
