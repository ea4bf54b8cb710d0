"""The experiment grid and its papermill runner (``echo-vlsm reproduce`` / ``status``).

A *profile* is a YAML parameter file, ``notebooks/params/<name>.yaml``: papermill parameters
for each numbered notebook and the part of the study's grid to run. The study's grid
(Synthetic Boost, Tables 1 and 2): 2 models x {real: P0-P7, synthetic: P0-P6,
synth-pt-real-ft: P0-P7} x encoders {trained, frozen}, plus zero-shot per model and prompt.

The runner executes, with papermill, in dependency order:

1. the *prepare* steps ``01_data_preparation``, ``02_sdm_synthesis``, ``03_prompt_generation``;
2. one ``04_train_vlsm`` per run, synthetic runs before the synth-pt-real-ft runs that start
   from their weights (synth-pt-real-ft P7 starts from synthetic P6: synthetic images have
   no P7, see ``pretrain_source``);
3. the *analysis* steps ``05_freeze_ablation`` and ``06_dice_difference_plots``.

Each executed notebook is kept: a run's in ``<runs_root>/<run_id>/04_train_vlsm.ipynb``, a
step's in ``<runs_root>/steps/``. Completed work is skipped on the next call (a run is complete
when ``summary.json`` says ``done`` and ``metrics.csv`` exists; a step when its marker
``steps/<step>.done.json`` records the same parameters). A failure leaves ``failure.json``
(the papermill cell, exception and message) in the run folder; ``keep_going`` carries on with
the runs that do not depend on it. ``shard=(i, n)`` takes the i-th of n disjoint shares of the
runs; a synthetic run and the synth-pt-real-ft runs that need it always share a shard.

Examples::

    reproduce("demo")                                   # the whole chain, resumable
    reproduce("paper", shard=(2, 4), stages=("runs",))  # GPU 2 of 4, runs only
    status("demo")                                      # DataFrame: run, state, ...
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import time
import traceback as tb
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echo_vlsm.io import write_json_atomic
from echo_vlsm.paths import project_root, resolve

MODELS = ("clipseg", "cris")
ENCODERS = ("trained", "frozen")
STRATEGIES = ("zeroshot", "synthetic", "real", "synth-pt-real-ft")
PROMPTS = tuple(f"p{i}" for i in range(8))
# Synthetic images carry no image-quality label, so the study's synthetic set stops at P6.
STRATEGY_PROMPTS = {
    "zeroshot": PROMPTS,
    "synthetic": PROMPTS[:7],
    "real": PROMPTS,
    "synth-pt-real-ft": PROMPTS,
}
PREPARE_STEPS = ("01_data_preparation", "02_sdm_synthesis", "03_prompt_generation")
TRAIN_NOTEBOOK = "04_train_vlsm"
ANALYSIS_STEPS = ("05_freeze_ablation", "06_dice_difference_plots")
STAGES = ("prepare", "runs", "analysis")
PROFILE_KEYS = {"profile", "description", "runs_root", "env", "kernel", "execution_timeout",
                "steps", "train", "models", "grid"}
GRID_KEYS = {"models", "strategies", "prompts", "encoders"}
FAILURE_FILE = "failure.json"


class ProfileError(ValueError):
    """A profile file that cannot be used."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


class PipelineError(RuntimeError):
    """A step or run failed (its record is in the message and in its failure file)."""


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Run:
    """One cell of the study's grid: a VLSM finetuned (or not, for zero-shot) with one
    strategy, encoder setting and prompt."""

    model: str
    strategy: str
    encoders: str
    prompt: str

    @property
    def id(self) -> str:
        """``<model>_<strategy>_<encoders>_<prompt>`` (same as ``echo_vlsm.train.run_id``)."""
        return f"{self.model}_{self.strategy}_{self.encoders}_{self.prompt}"


def pretrain_source(run: Run) -> Run | None:
    """The synthetic run whose weights a synth-pt-real-ft run starts from (same model and
    encoders; P7 uses P6, the richest synthetic prompt); None for other strategies."""
    if run.strategy != "synth-pt-real-ft":
        return None
    prompt = "p6" if run.prompt == "p7" else run.prompt
    return Run(run.model, "synthetic", run.encoders, prompt)


def _sort_key(run: Run):
    return (STRATEGIES.index(run.strategy), MODELS.index(run.model),
            ENCODERS.index(run.encoders), PROMPTS.index(run.prompt))


def study_grid(zeroshot: bool = True) -> list[Run]:
    """Every run of the study, in dependency order (zero-shot, synthetic, real,
    synth-pt-real-ft; then model, encoders, prompt). Zero-shot trains nothing, so it is
    listed once per model and prompt, with ``encoders="frozen"``; the tables put it in
    Table 1 as the study does."""
    runs = []
    for strategy in STRATEGIES:
        if strategy == "zeroshot" and not zeroshot:
            continue
        encs = ("frozen",) if strategy == "zeroshot" else ENCODERS
        for model in MODELS:
            for encoders in encs:
                for prompt in STRATEGY_PROMPTS[strategy]:
                    runs.append(Run(model, strategy, encoders, prompt))
    return sorted(runs, key=_sort_key)


def _as_list(value, allowed: Sequence[str], key: str, path) -> list[str]:
    if value is None or value == "all":
        return list(allowed)
    if isinstance(value, str):
        value = [value]
    bad = [v for v in value if v not in allowed]
    if bad:
        raise ProfileError(path, f"grid {key} {bad} unknown; accepted: {list(allowed)} or 'all'")
    return list(value)


def select_grid(blocks: Iterable[dict], path: str | os.PathLike = "<profile>") -> list[Run]:
    """The runs of the study's grid selected by any of ``blocks`` (each a filter with keys
    models, strategies, prompts, encoders; a missing key or ``all`` means every value), plus
    the synthetic runs they need, in dependency order."""
    grid = study_grid()
    chosen: set[Run] = set()
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise ProfileError(path, f"grid entry {i} is not a mapping of {sorted(GRID_KEYS)}")
        unknown = set(block) - GRID_KEYS
        if unknown:
            raise ProfileError(path, f"grid entry {i}: unknown keys {sorted(unknown)}; "
                                     f"accepted: {sorted(GRID_KEYS)}")
        models = _as_list(block.get("models"), MODELS, "models", path)
        strategies = _as_list(block.get("strategies"), STRATEGIES, "strategies", path)
        prompts = _as_list(block.get("prompts"), PROMPTS, "prompts", path)
        encoders = _as_list(block.get("encoders"), ENCODERS, "encoders", path)
        for run in grid:
            enc_ok = run.encoders in encoders or run.strategy == "zeroshot"
            if (run.model in models and run.strategy in strategies and run.prompt in prompts
                    and enc_ok):
                chosen.add(run)
    return with_dependencies(sorted(chosen, key=_sort_key))


def with_dependencies(runs: Iterable[Run]) -> list[Run]:
    """``runs`` plus the synthetic runs their synth-pt-real-ft runs start from, ordered."""
    out = set(runs)
    for run in list(out):
        dep = pretrain_source(run)
        if dep is not None:
            out.add(dep)
    return sorted(out, key=_sort_key)


def components(runs: Sequence[Run]) -> list[list[Run]]:
    """Group ``runs`` so that a synthetic run and the runs that start from it are together;
    groups come in the order of their first run in ``runs``."""
    index = {r: i for i, r in enumerate(runs)}
    parent = list(range(len(runs)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r in runs:
        dep = pretrain_source(r)
        if dep in index:
            parent[find(index[r])] = find(index[dep])
    groups: dict[int, list[Run]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(find(i), []).append(r)
    return sorted(groups.values(), key=lambda g: index[g[0]])


def shard_runs(runs: Sequence[Run], shard: tuple[int, int]) -> list[Run]:
    """The runs of shard ``i`` of ``n`` (1-based): dependency groups assigned greedily, largest
    first, to the least loaded shard (ties to the lowest). Deterministic, disjoint, covering,
    and a synth-pt-real-ft run always shares a shard with its synthetic run."""
    i, n = shard
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise ValueError(f"shard {i}/{n}: expected i/n with 1 <= i <= n")
    groups = components(runs)
    order = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), g))
    load = [0] * n
    mine: set[Run] = set()
    for g in order:
        target = min(range(n), key=lambda s: (load[s], s))
        load[target] += len(groups[g])
        if target == i - 1:
            mine.update(groups[g])
    return [r for r in runs if r in mine]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> (2, 4)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 1/4") from None
    if not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: expected 1 <= i <= n")
    return i, n


def filter_runs(runs: Sequence[Run], patterns: Iterable[str] | None) -> list[Run]:
    """Runs whose id matches any glob in ``patterns`` (all when None or empty)."""
    patterns = [p for p in (patterns or []) if p]
    if not patterns:
        return list(runs)
    return [r for r in runs if any(fnmatch.fnmatchcase(r.id, p) for p in patterns)]


# --------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------


@dataclass
class Profile:
    """A parsed profile file: per-step papermill parameters and the selected runs."""

    name: str
    path: Path
    runs_root: str
    steps: dict[str, dict]
    train: dict
    models: dict[str, dict]
    runs: list[Run]
    env: dict[str, str] = field(default_factory=dict)
    kernel: str = "python3"
    execution_timeout: int | None = None

    def run_parameters(self, run: Run) -> dict[str, Any]:
        """Papermill parameters of ``04_train_vlsm`` for ``run``."""
        params = {**self.train, **self.models.get(run.model, {})}
        params.update(model=run.model, strategy=run.strategy, encoders=run.encoders,
                      prompt=run.prompt, runs_root=self.runs_root)
        return params

    def step_parameters(self, step: str) -> dict[str, Any]:
        params = dict(self.steps.get(step) or {})
        if step in ANALYSIS_STEPS:
            params.setdefault("profile", self.name)
            params.setdefault("runs_root", self.runs_root)
        return params


def profile_path(profile: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A profile name (``demo``) means ``notebooks/params/<name>.yaml``; a path is used as is."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return resolve(p, root)
    return resolve(Path("notebooks") / "params" / f"{profile}.yaml", root)


def load_profile(profile: str | os.PathLike, root: str | os.PathLike | None = None) -> Profile:
    """Read and check a profile file (see ``notebooks/params/demo.yaml``)."""
    path = profile_path(profile, root)
    if not path.is_file():
        avail = sorted(q.stem for q in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ProfileError(path, f"no such profile; available: {avail}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(path, f"not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ProfileError(path, "expected a mapping at the top level")
    unknown = set(data) - PROFILE_KEYS
    if unknown:
        raise ProfileError(path, f"unknown keys {sorted(unknown)}; accepted: {sorted(PROFILE_KEYS)}")
    steps = data.get("steps") or {}
    known_steps = set(PREPARE_STEPS) | set(ANALYSIS_STEPS)
    bad = set(steps) - known_steps
    if bad:
        raise ProfileError(path, f"steps {sorted(bad)} unknown; accepted: {sorted(known_steps)} "
                                 f"({TRAIN_NOTEBOOK} takes its parameters from 'train')")
    for key in ("train", "models", "env", "steps"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ProfileError(path, f"'{key}' must be a mapping")
    models = data.get("models") or {}
    bad = set(models) - set(MODELS)
    if bad:
        raise ProfileError(path, f"models {sorted(bad)} unknown; accepted: {list(MODELS)}")
    grid = data.get("grid")
    if grid is None:
        grid = []
    if isinstance(grid, dict):
        grid = [grid]
    if not isinstance(grid, list):
        raise ProfileError(path, "'grid' must be a list of filters (models, strategies, ...)")
    name = str(data.get("profile") or path.stem)
    return Profile(
        name=name,
        path=path,
        runs_root=str(data.get("runs_root") or f"runs/{name}"),
        steps={k: dict(v or {}) for k, v in steps.items()},
        train=dict(data.get("train") or {}),
        models={k: dict(v or {}) for k, v in models.items()},
        runs=select_grid(grid, path),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        kernel=str(data.get("kernel") or "python3"),
        execution_timeout=data.get("execution_timeout"),
    )


# --------------------------------------------------------------------------------------
# State on disk
# --------------------------------------------------------------------------------------


def run_dir(runs_root: str | os.PathLike, run: Run, root=None) -> Path:
    return resolve(runs_root, root) / run.id


def steps_dir(runs_root: str | os.PathLike, root=None) -> Path:
    return resolve(runs_root, root) / "steps"


def run_complete(path: str | os.PathLike) -> bool:
    """A run folder is complete when ``summary.json`` says ``"done": true`` and
    ``metrics.csv`` exists (the training contract)."""
    path = Path(path)
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return bool(summary.get("done")) and (path / "metrics.csv").is_file()


def _params_hash(params: dict) -> str:
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _runs_fingerprint(profile: Profile, root) -> str:
    parts = []
    for run in profile.runs:
        f = run_dir(profile.runs_root, run, root) / "summary.json"
        if f.is_file():
            parts.append(f"{run.id}:{f.stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def step_complete(marker: Path, params_hash: str) -> bool:
    try:
        data = json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return data.get("params_hash") == params_hash


def read_failure(folder: str | os.PathLike, name: str = FAILURE_FILE) -> dict | None:
    try:
        return json.loads((Path(folder) / name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _describe(exc: BaseException) -> dict:
    """What went wrong in a papermill execution: the failing cell and its exception."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return {"ename": exc.ename, "evalue": exc.evalue, "exec_count": exc.exec_count,
                "cell_index": exc.cell_index, "source": exc.source,
                "traceback": [line for line in (exc.traceback or [])][-6:]}
    return {"ename": type(exc).__name__, "evalue": str(exc), "exec_count": None,
            "cell_index": None, "source": None,
            "traceback": tb.format_exception(type(exc), exc, exc.__traceback__)[-3:]}


def failure_message(record: dict) -> str:
    where = f"cell {record['exec_count']}" if record.get("exec_count") else "outside a cell"
    return f"{record.get('ename')}: {record.get('evalue')} ({where}; {record.get('notebook')})"


# --------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------


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

    ``notebooks_dir`` holds ``01_*.ipynb`` .. ``06_*.ipynb`` (default ``notebooks/``);
    ``only`` keeps runs whose id matches a glob (the synthetic runs they need come along when
    not yet complete); ``stages`` picks among prepare, runs and analysis. With ``shard``, the
    analysis waits until every run of the profile is complete (the last shard does it).
    """
    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    nb_dir = resolve(notebooks_dir or "notebooks", root)
    stages = tuple(stages)
    bad = set(stages) - set(STAGES)
    if bad:
        raise ValueError(f"stages {sorted(bad)} unknown; accepted: {list(STAGES)}")
    for key, value in prof.env.items():
        os.environ.setdefault(key, value)
    out = Outcome()
    sdir = steps_dir(prof.runs_root, root)

    def notebook(name: str) -> Path:
        path = nb_dir / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: notebook missing (profile {prof.path} needs it)")
        return path

    def run_step(step: str, params: dict, params_hash: str) -> bool:
        marker = sdir / f"{step}.done.json"
        if step_complete(marker, params_hash):
            out.skipped.append(step)
            log(f"  {step}: done before, skipped")
            return True
        if dry_run:
            log(f"  {step}: would run")
            return True
        log(f"  {step}: running ...")
        t0 = time.perf_counter()
        try:
            execute_notebook(notebook(step), sdir / f"{step}.ipynb", params, root, prof.kernel,
                             prof.execution_timeout)
        except Exception as exc:
            record = {**_describe(exc), "notebook": str(sdir / f"{step}.ipynb"),
                      "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "parameters": params}
            write_json_atomic(sdir / f"{step}.{FAILURE_FILE}", record)
            out.failed[step] = failure_message(record)
            log(f"  {step}: FAILED {failure_message(record)}")
            return False
        seconds = time.perf_counter() - t0
        write_json_atomic(marker, {"params_hash": params_hash, "seconds": round(seconds, 2),
                                   "parameters": params,
                                   "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        (sdir / f"{step}.{FAILURE_FILE}").unlink(missing_ok=True)
        out.executed.append(step)
        out.seconds[step] = seconds
        log(f"  {step}: done in {seconds:.1f} s")
        return True

    needed = [s for s in PREPARE_STEPS if "prepare" in stages and s in prof.steps]
    needed += [TRAIN_NOTEBOOK] if "runs" in stages and prof.runs else []
    needed += [s for s in ANALYSIS_STEPS if "analysis" in stages and s in prof.steps]
    for name in needed:
        notebook(name)  # fail early, before hours of work, if one is missing

    t_start = time.perf_counter()
    log(f"echo-vlsm reproduce: profile {prof.name} ({prof.path}), runs in {prof.runs_root}")

    # 1. prepare
    if "prepare" in stages:
        for step in PREPARE_STEPS:
            if step not in prof.steps:
                continue
            params = prof.step_parameters(step)
            if not run_step(step, params, _params_hash(params)):
                if keep_going:
                    log("  the runs need this step: stopping (nothing else can go on)")
                return _finish(out, prof, root, t_start, log, raise_on_fail=not keep_going)

    # 2. runs
    runs = prof.runs
    if shard is not None:
        runs = shard_runs(runs, shard)
    selected = filter_runs(runs, only)
    if only:  # bring along the synthetic runs they start from, unless already complete
        needed = {d for d in map(pretrain_source, selected) if d is not None}
        needed = {d for d in needed - set(selected)
                  if not run_complete(run_dir(prof.runs_root, d, root))}
        selected = sorted(set(selected) | needed, key=_sort_key)
    if "runs" in stages:
        todo = [r for r in selected if not run_complete(run_dir(prof.runs_root, r, root))]
        log(f"  runs: {len(selected)} selected"
            + (f" (shard {shard[0]}/{shard[1]})" if shard else "")
            + f", {len(selected) - len(todo)} complete, {len(todo)} to run")
        bad_runs: set[Run] = set()
        for k, run in enumerate(todo, 1):
            dep = pretrain_source(run)
            folder = run_dir(prof.runs_root, run, root)
            if dep is not None and (dep in bad_runs or (
                    dep not in selected and not run_complete(
                        run_dir(prof.runs_root, dep, root)))):
                why = f"needs {dep.id}, which " + ("failed" if dep in bad_runs else
                                                   "is not complete")
                out.blocked[run.id] = why
                bad_runs.add(run)
                log(f"  [{k}/{len(todo)}] {run.id}: skipped, {why}")
                continue
            if dry_run:
                log(f"  [{k}/{len(todo)}] {run.id}: would run")
                continue
            log(f"  [{k}/{len(todo)}] {run.id}: running ...")
            t0 = time.perf_counter()
            params = prof.run_parameters(run)
            output = folder / f"{TRAIN_NOTEBOOK}.ipynb"
            try:
                execute_notebook(notebook(TRAIN_NOTEBOOK), output, params, root, prof.kernel,
                                 prof.execution_timeout)
                if not run_complete(folder):
                    raise PipelineError(
                        f"{TRAIN_NOTEBOOK} finished but {folder} is not complete "
                        "(summary.json with done: true and metrics.csv expected)")
            except Exception as exc:
                record = {**_describe(exc), "notebook": str(output), "run": run.id,
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "parameters": params}
                write_json_atomic(folder / FAILURE_FILE, record)
                out.failed[run.id] = failure_message(record)
                bad_runs.add(run)
                log(f"  [{k}/{len(todo)}] {run.id}: FAILED {failure_message(record)}")
                if not keep_going:
                    return _finish(out, prof, root, t_start, log, raise_on_fail=True)
                continue
            (folder / FAILURE_FILE).unlink(missing_ok=True)
            seconds = time.perf_counter() - t0
            out.executed.append(run.id)
            out.seconds[run.id] = seconds
            log(f"  [{k}/{len(todo)}] {run.id}: done in {seconds:.1f} s")
        out.skipped.extend(r.id for r in selected if r not in set(todo))

    # 3. analysis
    if "analysis" in stages:
        pending = [r.id for r in prof.runs
                   if not run_complete(run_dir(prof.runs_root, r, root))]
        if shard is not None and pending:
            out.waiting = list(ANALYSIS_STEPS)
            log(f"  analysis waits: {len(pending)} runs of the profile are not complete yet "
                "(other shards); the last shard to finish runs it")
        elif not any(run_complete(run_dir(prof.runs_root, r, root)) for r in prof.runs):
            out.waiting = list(ANALYSIS_STEPS)
            log("  analysis skipped: no run is complete")
        else:
            fingerprint = _runs_fingerprint(prof, root)
            for step in ANALYSIS_STEPS:
                if step not in prof.steps:
                    continue
                params = prof.step_parameters(step)
                if not run_step(step, params, _params_hash({**params, "_runs": fingerprint})):
                    if not keep_going:
                        break
            tables = prof.steps.get("06_dice_difference_plots", {}).get("tables_dir")
            if tables:
                report = resolve(tables, root) / "report.md"
                out.report = report if report.is_file() else None
    return _finish(out, prof, root, t_start, log, raise_on_fail=not keep_going)


def _finish(out: Outcome, prof: Profile, root: Path, t_start: float, log,
            raise_on_fail: bool) -> Outcome:
    total = time.perf_counter() - t_start
    out.seconds["total"] = total
    log(f"echo-vlsm reproduce: {len(out.executed)} executed, {len(out.skipped)} skipped, "
        f"{len(out.failed)} failed, {len(out.blocked)} blocked, in {total:.1f} s")
    for name, msg in out.failed.items():
        log(f"  FAILED {name}: {msg}")
    for name, msg in out.blocked.items():
        log(f"  BLOCKED {name}: {msg}")
    if out.executed:
        log_file = resolve(prof.runs_root, root) / "reproduce_timings.json"
        write_json_atomic(log_file, {"profile": prof.name, "total_seconds": round(total, 1),
                                     "seconds": {k: round(v, 1) for k, v in out.seconds.items()},
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if raise_on_fail and out.failed:
        name, msg = next(iter(out.failed.items()))
        raise PipelineError(f"{name} failed: {msg}")
    return out


# --------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------


def status(profile: str | os.PathLike | Profile = "demo",
           root: str | os.PathLike | None = None):
    """A table of the profile's steps and runs: ``name, kind, state, seconds, detail`` with
    state ``done``, ``pending``, ``started`` (has a checkpoint or executed notebook, not
    complete) or ``failed`` (its failure record says why)."""
    import pandas as pd

    root = Path(root) if root is not None else project_root()
    prof = profile if isinstance(profile, Profile) else load_profile(profile, root)
    sdir = steps_dir(prof.runs_root, root)
    rows = []
    for step in (*PREPARE_STEPS, *ANALYSIS_STEPS):
        if step not in prof.steps:
            continue
        marker = sdir / f"{step}.done.json"
        failure = read_failure(sdir, f"{step}.{FAILURE_FILE}")
        done = marker.is_file()
        state = "done" if done else "failed" if failure else "pending"
        seconds = json.loads(marker.read_text()).get("seconds") if done else None
        detail = failure_message(failure) if failure and not done else ""
        rows.append({"name": step, "kind": "step", "state": state, "seconds": seconds,
                     "detail": detail})
    for run in prof.runs:
        folder = run_dir(prof.runs_root, run, root)
        failure = read_failure(folder)
        seconds, detail = None, ""
        if run_complete(folder):
            state = "done"
            try:
                summary = json.loads((folder / "summary.json").read_text())
                seconds = summary.get("seconds_total")
                seconds = round(float(seconds), 1) if seconds is not None else None
                if summary.get("best_val_dice") is not None:
                    detail = f"best val dice {float(summary['best_val_dice']):.3g}"
            except (ValueError, TypeError):
                pass
        elif failure:
            state, detail = "failed", failure_message(failure)
        elif any((folder / f).exists() for f in ("state.pt", f"{TRAIN_NOTEBOOK}.ipynb")):
            state = "started"
        else:
            state = "pending"
        rows.append({"name": run.id, "kind": "run", "state": state, "seconds": seconds,
                     "detail": detail})
    return pd.DataFrame(rows, columns=["name", "kind", "state", "seconds", "detail"])
