"""Running a profile with papermill: ``reproduce`` (``echo-vlsm reproduce``).

In dependency order:

1. the *prepare* steps ``01_data_preparation``, ``02_sdm_synthesis``, ``03_prompt_generation``;
2. one ``04_train_vlsm`` per run, synthetic runs before the synth-pt-real-ft runs that start
   from their weights (synth-pt-real-ft P7 starts from synthetic P6, ``grid.pretrain_source``);
3. the *analysis* steps ``05_freeze_ablation`` and ``06_dice_difference_plots``.

Each executed notebook is kept: a run's in ``<runs_root>/<run_id>/04_train_vlsm.ipynb``, a
step's in ``<runs_root>/steps/``. Completed work is skipped on the next call (``state``).
``keep_going`` carries on past a failure with the runs that do not depend on it.
``shard=(i, n)`` takes the i-th of n disjoint shares of the runs; a synthetic run and the
synth-pt-real-ft runs that need it always share a shard.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from echo_vlsm.grid import Run, pretrain_source, run_complete
from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import project_root, resolve
from echo_vlsm.pipeline.errors import PipelineError
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
    PREPARE_STEPS,
    STAGES,
    TRAIN_NOTEBOOK,
    Profile,
    load_profile,
)
from echo_vlsm.pipeline.selection import filter_runs, shard_runs, sort_key
from echo_vlsm.pipeline.state import (
    FAILURE_FILE,
    failure_message,
    params_hash,
    run_dir,
    runs_fingerprint,
    step_complete,
    step_failure_name,
    step_marker,
    steps_dir,
    write_failure,
    write_step_marker,
)

TIMINGS_FILE = "reproduce_timings.json"


def execute_notebook(notebook: Path, output: Path, parameters: dict, cwd: Path,
                     kernel: str = "python3", timeout: int | None = None) -> None:
    """Run one notebook with papermill, keeping the executed copy at ``output``."""
    import papermill as pm

    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=parameters, cwd=str(cwd),
                        kernel_name=kernel, progress_bar=False, execution_timeout=timeout)


@dataclass
class Outcome:
    """What one call of ``reproduce`` did."""

    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked


def _log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class _Call:
    """One call of ``reproduce``: the profile, where things are, what happened so far."""

    prof: Profile
    root: Path
    nb_dir: Path
    keep_going: bool
    dry_run: bool
    log: Callable[[str], None]
    out: Outcome = field(default_factory=Outcome)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def sdir(self) -> Path:
        return steps_dir(self.prof.runs_root, self.root)

    def folder(self, run: Run) -> Path:
        return run_dir(self.prof.runs_root, run, self.root)

    def complete(self, run: Run) -> bool:
        return run_complete(self.folder(run))

    def notebook(self, name: str) -> Path:
        path = self.nb_dir / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: notebook missing (profile {self.prof.path} needs it)")
        return path

    def execute(self, name: str, output: Path, params: dict) -> None:
        execute_notebook(self.notebook(name), output, params, self.root, self.prof.kernel,
                         self.prof.execution_timeout)

    def failed(self, name: str, record: dict, prefix: str = "") -> None:
        self.out.failed[name] = failure_message(record)
        self.log(f"  {prefix}{name}: FAILED {failure_message(record)}")

    def succeeded(self, name: str, seconds: float, prefix: str = "") -> None:
        self.out.executed.append(name)
        self.out.seconds[name] = seconds
        self.log(f"  {prefix}{name}: done in {seconds:.1f} s")


def reproduce(
    profile: str | os.PathLike | Profile = "demo",
    *,
    notebooks_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    only: Iterable[str] | None = None,
    keep_going: bool = False,
    stages: Iterable[str] = STAGES,
    dry_run: bool = False,
    log=_log,
) -> Outcome:
    """Run a profile: prepare steps, the selected runs, the analysis steps (see module doc).

    Args:
        profile: a profile name (``demo``), a YAML path, or a loaded ``Profile``.
        notebooks_dir: holds ``01_*.ipynb`` .. ``06_*.ipynb`` (default ``notebooks/``).
        shard: ``(i, n)``: only the i-th of n shares of the runs; the analysis then waits
            until every run of the profile is complete (the last shard does it).
        only: keep runs whose id matches a glob (the synthetic runs they need come along
            when not yet complete).
        keep_going: record a failure and carry on with what does not depend on it.
        stages: among ``prepare``, ``runs`` and ``analysis``.
        dry_run: say what would run, run nothing.

    Returns:
        An ``Outcome``: executed, skipped, failed, blocked, waiting, seconds, report.

    Raises:
        PipelineError: a step or run failed (unless ``keep_going``).
        FileNotFoundError: a notebook the profile needs is missing (before any work).
    """
    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    stages = tuple(stages)
    bad = set(stages) - set(STAGES)
    if bad:
        raise ValueError(f"stages {sorted(bad)} unknown; accepted: {list(STAGES)}")
    for key, value in prof.env.items():
        os.environ.setdefault(key, value)
    call = _Call(prof, root, resolve(notebooks_dir or "notebooks", root), keep_going, dry_run,
                 log)
    _check_notebooks(call, stages)
    call.t_start = time.perf_counter()
    log(f"echo-vlsm reproduce: profile {prof.name} ({prof.path}), runs in {prof.runs_root}")

    if "prepare" in stages and not _prepare(call):
        if keep_going:
            log("  the runs need this step: stopping (nothing else can go on)")
        return _finish(call, raise_on_fail=not keep_going)
    if "runs" in stages:
        if not _train(call, _selected_runs(call, shard, only), shard):
            return _finish(call, raise_on_fail=True)
    if "analysis" in stages:
        _analysis(call, shard)
    return _finish(call, raise_on_fail=not keep_going)


def _check_notebooks(call: _Call, stages: tuple[str, ...]) -> None:
    """Fail early, before hours of work, if a notebook the call needs is missing."""
    prof = call.prof
    needed = [s for s in PREPARE_STEPS if "prepare" in stages and s in prof.steps]
    needed += [TRAIN_NOTEBOOK] if "runs" in stages and prof.runs else []
    needed += [s for s in ANALYSIS_STEPS if "analysis" in stages and s in prof.steps]
    for name in needed:
        call.notebook(name)


def _run_step(call: _Call, step: str, params: dict, expected_hash: str) -> bool:
    """Run one prepare or analysis step unless its marker says it is done; False on failure."""
    marker = step_marker(call.sdir, step)
    if step_complete(marker, expected_hash):
        call.out.skipped.append(step)
        call.log(f"  {step}: done before, skipped")
        return True
    if call.dry_run:
        call.log(f"  {step}: would run")
        return True
    call.log(f"  {step}: running ...")
    t0 = time.perf_counter()
    output = call.sdir / f"{step}.ipynb"
    try:
        call.execute(step, output, params)
    except Exception as exc:
        record = write_failure(call.sdir / step_failure_name(step), exc, output, params)
        call.failed(step, record)
        return False
    seconds = time.perf_counter() - t0
    write_step_marker(marker, expected_hash, seconds, params)
    (call.sdir / step_failure_name(step)).unlink(missing_ok=True)
    call.succeeded(step, seconds)
    return True


def _prepare(call: _Call) -> bool:
    """The prepare steps the profile has, in order; False at the first failure."""
    for step in PREPARE_STEPS:
        if step in call.prof.steps:
            params = call.prof.step_parameters(step)
            if not _run_step(call, step, params, params_hash(params)):
                return False
    return True


def _selected_runs(call: _Call, shard, only) -> list[Run]:
    """This call's runs: the shard's, filtered by ``only``, with the synthetic runs they
    start from when those are not complete yet."""
    runs = call.prof.runs if shard is None else shard_runs(call.prof.runs, shard)
    selected = filter_runs(runs, only)
    if only:
        needed = {d for d in map(pretrain_source, selected) if d is not None}
        needed = {d for d in needed - set(selected) if not call.complete(d)}
        selected = sorted(set(selected) | needed, key=sort_key)
    return selected


def _blocked_by(call: _Call, run: Run, selected: list[Run], bad_runs: set[Run]) -> str | None:
    """Why ``run`` cannot start: the run it starts from failed or is neither complete nor
    part of this call; None when it can."""
    dep = pretrain_source(run)
    if dep is None:
        return None
    if dep in bad_runs:
        return f"needs {dep.id}, which failed"
    if dep not in selected and not call.complete(dep):
        return f"needs {dep.id}, which is not complete"
    return None


def _train(call: _Call, selected: list[Run], shard) -> bool:
    """Every selected run that is not complete, in order; False when one failed and the call
    does not keep going."""
    todo = [r for r in selected if not call.complete(r)]
    call.log(f"  runs: {len(selected)} selected"
             + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
             + f", {len(selected) - len(todo)} complete, {len(todo)} to run")
    bad_runs: set[Run] = set()
    for k, run in enumerate(todo, 1):
        prefix = f"[{k}/{len(todo)}] "
        why = _blocked_by(call, run, selected, bad_runs)
        if why is not None:
            call.out.blocked[run.id] = why
            bad_runs.add(run)
            call.log(f"  {prefix}{run.id}: skipped, {why}")
        elif call.dry_run:
            call.log(f"  {prefix}{run.id}: would run")
        elif not _train_one(call, run, prefix):
            bad_runs.add(run)
            if not call.keep_going:
                return False
    call.out.skipped.extend(r.id for r in selected if r not in set(todo))
    return True


def _train_one(call: _Call, run: Run, prefix: str) -> bool:
    """Execute ``04_train_vlsm`` for one run; its folder must be complete afterwards."""
    call.log(f"  {prefix}{run.id}: running ...")
    t0 = time.perf_counter()
    params = call.prof.run_parameters(run)
    folder = call.folder(run)
    output = folder / f"{TRAIN_NOTEBOOK}.ipynb"
    try:
        call.execute(TRAIN_NOTEBOOK, output, params)
        if not run_complete(folder):
            raise PipelineError(
                f"{TRAIN_NOTEBOOK} finished but {folder} is not complete "
                "(summary.json with done: true and metrics.csv expected)")
    except Exception as exc:
        record = write_failure(folder / FAILURE_FILE, exc, output, params, run=run.id)
        call.failed(run.id, record, prefix)
        return False
    (folder / FAILURE_FILE).unlink(missing_ok=True)
    call.succeeded(run.id, time.perf_counter() - t0, prefix)
    return True


def _analysis(call: _Call, shard) -> None:
    """The analysis steps, once every run of the profile is complete (or, unsharded, at
    least one); redone when the runs' summaries change."""
    prof = call.prof
    pending = [r.id for r in prof.runs if not call.complete(r)]
    if shard is not None and pending:
        call.out.waiting = list(ANALYSIS_STEPS)
        call.log(f"  analysis waits: {len(pending)} runs of the profile are not complete yet "
                 "(other shards); the last shard to finish runs it")
        return
    if not any(call.complete(r) for r in prof.runs):
        call.out.waiting = list(ANALYSIS_STEPS)
        call.log("  analysis skipped: no run is complete")
        return
    fingerprint = runs_fingerprint(prof.runs_root, prof.runs, call.root)
    for step in ANALYSIS_STEPS:
        if step in prof.steps:
            params = prof.step_parameters(step)
            ok = _run_step(call, step, params, params_hash({**params, "_runs": fingerprint}))
            if not ok and not call.keep_going:
                break
    tables = prof.steps.get("06_dice_difference_plots", {}).get("tables_dir")
    if tables:
        report = resolve(tables, call.root) / "report.md"
        call.out.report = report if report.is_file() else None


def _finish(call: _Call, raise_on_fail: bool) -> Outcome:
    """Log the totals, keep the timings, raise the first failure if asked."""
    out, log = call.out, call.log
    total = time.perf_counter() - call.t_start
    out.seconds["total"] = total
    log(f"echo-vlsm reproduce: {len(out.executed)} executed, {len(out.skipped)} skipped, "
        f"{len(out.failed)} failed, {len(out.blocked)} blocked, in {total:.1f} s")
    for name, msg in out.failed.items():
        log(f"  FAILED {name}: {msg}")
    for name, msg in out.blocked.items():
        log(f"  BLOCKED {name}: {msg}")
    if out.executed:
        write_json_atomic(resolve(call.prof.runs_root, call.root) / TIMINGS_FILE,
                          {"profile": call.prof.name, "total_seconds": round(total, 1),
                           "seconds": {k: round(v, 1) for k, v in out.seconds.items()},
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if raise_on_fail and out.failed:
        name, msg = next(iter(out.failed.items()))
        raise PipelineError(f"{name} failed: {msg}")
    return out
