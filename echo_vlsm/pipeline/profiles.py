"""Profiles: ``notebooks/params/<name>.yaml``, the papermill parameters of each numbered
notebook and the part of the study's grid to run (see ``notebooks/params/demo.yaml``).

Examples::

    prof = load_profile("demo")
    prof.runs[0].id, prof.run_parameters(prof.runs[0])["epochs"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from echo_vlsm.grid import MODELS, NO_PROMPT, Run
from echo_vlsm.paths import resolve
from echo_vlsm.pipeline.errors import ProfileError
from echo_vlsm.pipeline.selection import select_grid

PREPARE_STEPS = ("01_data_preparation", "02_sdm_synthesis", "03_prompt_generation")
TRAIN_NOTEBOOK = "04_train_vlsm"
ANALYSIS_STEPS = ("05_freeze_ablation", "06_dice_difference_plots")
#: After the analysis: a trained model explored (static figures under papermill).
EXPLORE_STEPS = ("07_explore",)
#: Beyond the study: seed-aware comparisons, mixed training, data efficiency, the baseline.
BEYOND_STEPS = ("08_beyond",)
#: Clinical indices: every run's LV volumes and EF against the reference (after 06, whose
#: report it adds its block to).
CLINICAL_STEPS = ("09_clinical",)
#: Keys of a run that belong to the grid (a block's ``seeds``, ``real_fractions``,
#: ``provenance``), not to ``train:`` or ``models:``, so a run's id always names them.
GRID_RUN_KEYS = ("seed", "real_fraction", "provenance")
STAGES = ("prepare", "runs", "analysis")
#: Every run scored on another dataset's test split, one job per run and dataset
#: (``evaluate_on``; ``train.cross_eval``, whose ``DATASETS`` this repeats without importing
#: torch into the runner; a test keeps the two equal).
CROSS_NOTEBOOK = "10_cross_dataset"
EVAL_DATASETS = ("echonet", "camus")
#: The datasets that a job of the profile exports before they are evaluated on (EchoNet: the
#: download, or the EchoNet-layout phantom); a CAMUS-format target is exported by 01.
PREPARED_DATASETS = ("echonet",)
#: The prompt keys a dataset can make, where it cannot make all (EchoNet: structure, view,
#: phase, as ``data.echonet_export.PROMPT_KEYS``; and a text-free model's structure name):
#: runs with another prompt get no evaluation job there.
EVAL_PROMPTS: dict[str, tuple[str, ...]] = {"echonet": ("p0", "p1", "p2", "p3", NO_PROMPT)}
PROFILE_KEYS = {"profile", "description", "runs_root", "env", "kernel", "execution_timeout",
                "steps", "train", "models", "grid", "slurm", "inherits", "evaluate_on",
                "datasets"}


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
    slurm: dict = field(default_factory=dict)
    fast_dev_run: int | None = None  # a rehearsal (``fast_dev_profile``)
    #: datasets every run is also scored on (``CROSS_NOTEBOOK``), and per dataset its
    #: notebook parameters (``dataset_dir``, the exported folder; how to make it)
    evaluate_on: list[str] = field(default_factory=list)
    datasets: dict[str, dict] = field(default_factory=dict)

    def run_parameters(self, run: Run) -> dict[str, Any]:
        """Papermill parameters of ``04_train_vlsm`` for ``run``."""
        params = {**self.train, **self.models.get(run.model, {})}
        params.update(run.as_dict(), runs_root=self.runs_root)
        return params

    def step_parameters(self, step: str) -> dict[str, Any]:
        """Papermill parameters of a prepare or analysis step (the analysis steps learn the
        profile's name and runs folder unless the profile sets them)."""
        params = dict(self.steps.get(step) or {})
        if step in ANALYSIS_STEPS or step in BEYOND_STEPS or step in CLINICAL_STEPS:
            params.setdefault("profile", self.name)
        if step in (*ANALYSIS_STEPS, *EXPLORE_STEPS, *BEYOND_STEPS, *CLINICAL_STEPS):
            params.setdefault("runs_root", self.runs_root)
        return params

    def prepare_parameters(self, dataset: str) -> dict[str, Any]:
        """Papermill parameters of ``CROSS_NOTEBOOK`` when it exports ``dataset`` (no run)."""
        return {**self.datasets[dataset], "dataset": dataset}

    def eval_parameters(self, run: Run, dataset: str) -> dict[str, Any]:
        """Papermill parameters of ``CROSS_NOTEBOOK`` scoring ``run`` on ``dataset``: the
        exported folder, the run, the run's device (a rehearsal's cap is added later)."""
        params = {"dataset": dataset, "dataset_dir": self.datasets[dataset]["dataset_dir"],
                  "runs_root": self.runs_root, "run_id": run.id}
        device = self.run_parameters(run).get("device")
        return params if device is None else {**params, "device": device}


def profile_path(profile: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A profile name (``demo``) means ``notebooks/params/<name>.yaml``; a path is used as is."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return resolve(p, root)
    return resolve(Path("notebooks") / "params" / f"{profile}.yaml", root)


def load_profile(profile: str | os.PathLike, root: str | os.PathLike | None = None) -> Profile:
    """Read and check a profile file.

    Raises:
        ProfileError: no such file, not YAML, an unknown key, step, model or grid value.
    """
    path = profile_path(profile, root)
    data = _inherited(path, root, [])
    steps = data.get("steps") or {}
    known_steps = (set(PREPARE_STEPS) | set(ANALYSIS_STEPS) | set(EXPLORE_STEPS)
                   | set(BEYOND_STEPS) | set(CLINICAL_STEPS))
    bad = set(steps) - known_steps
    if bad:
        raise ProfileError(path, f"steps {sorted(bad)} unknown; accepted: {sorted(known_steps)} "
                                 f"({TRAIN_NOTEBOOK} takes its parameters from 'train')")
    for key in ("train", "models", "env", "steps", "slurm", "datasets"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ProfileError(path, f"'{key}' must be a mapping")
    models = data.get("models") or {}
    bad = set(models) - set(MODELS)
    if bad:
        raise ProfileError(path, f"models {sorted(bad)} unknown; accepted: {list(MODELS)}")
    grid_key = {"seed": "seeds", "real_fraction": "real_fractions", "provenance": "provenance"}
    for where, params in [("train", data.get("train") or {}),
                          *((f"models.{m}", v or {}) for m, v in models.items())]:
        for key in GRID_RUN_KEYS:  # the defaults (seed: 0) are what every study run has
            if key in params and params[key] not in (0, 1.0, False):
                raise ProfileError(path, f"{where}.{key}: {params[key]!r}; a run's {key} is "
                                         f"set by a grid block's '{grid_key[key]}', so that "
                                         "its run id names it")
    name = str(data.get("profile") or path.stem)
    return Profile(
        name=name,
        path=path,
        runs_root=str(data.get("runs_root") or f"runs/{name}"),
        steps={k: dict(v or {}) for k, v in steps.items()},
        train=dict(data.get("train") or {}),
        models={k: dict(v or {}) for k, v in models.items()},
        runs=select_grid(_grid_blocks(data.get("grid"), path), path),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        kernel=str(data.get("kernel") or "python3"),
        execution_timeout=data.get("execution_timeout"),
        slurm=dict(data.get("slurm") or {}),
        **_evaluations(data, path),
    )


def _evaluations(data: dict, path: Path) -> dict:
    """``evaluate_on`` (a list of ``EVAL_DATASETS``) and ``datasets`` (per dataset a mapping
    with ``dataset_dir``, the exported folder), checked."""
    names = data.get("evaluate_on") or []
    if isinstance(names, str) or not isinstance(names, list):
        raise ProfileError(path, f"'evaluate_on' must be a list of datasets, e.g. [echonet]; "
                                 f"got {names!r}")
    bad = [n for n in names if n not in EVAL_DATASETS]
    if bad:
        raise ProfileError(path, f"evaluate_on: {bad} unknown; accepted: {list(EVAL_DATASETS)}")
    datasets = {str(k): dict(v or {}) for k, v in (data.get("datasets") or {}).items()}
    for name in names:
        where = datasets.get(name) or {}
        if not isinstance(where.get("dataset_dir"), str) or not where["dataset_dir"]:
            raise ProfileError(path, f"evaluate_on names {name!r}, but 'datasets.{name}."
                                     "dataset_dir' (its exported folder) is not set")
    return {"evaluate_on": list(dict.fromkeys(names)), "datasets": datasets}


def _inherited(path: Path, root, seen: list[Path]) -> dict:
    """The profile at ``path`` on top of the one it ``inherits`` (recursively): mappings are
    merged key by key (steps and models one level deeper), other values replaced; a step
    set to ``null`` is one the inheriting profile does not run."""
    if path in seen:
        raise ProfileError(path, "inherits itself: " + " -> ".join(str(p) for p in seen))
    data = _read_yaml(path)
    parent = data.pop("inherits", None)
    if parent is None:
        return data
    base_path = profile_path(parent, root) if not Path(str(parent)).is_absolute() \
        and Path(str(parent)).suffix not in (".yaml", ".yml") else path.parent / str(parent)
    base = _inherited(base_path, root, [*seen, path])
    for key, value in data.items():
        if key in ("steps", "models", "datasets") and isinstance(value, dict):
            merged = dict(base.get(key) or {})
            for name, params in value.items():
                if key == "steps" and params is None:
                    merged.pop(name, None)
                    continue
                merged[name] = {**(merged.get(name) or {}), **(params or {})}
            base[key] = merged
        elif key in ("train", "env", "slurm") and isinstance(value, dict):
            base[key] = {**(base.get(key) or {}), **value}
        else:
            base[key] = value
    if "profile" not in data:
        base["profile"] = path.stem
    if "runs_root" not in data:
        base.pop("runs_root", None)
    return base


def _read_yaml(path: Path) -> dict:
    """The profile's top-level mapping, with only known keys."""
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
        raise ProfileError(
            path, f"unknown keys {sorted(unknown)}; accepted: {sorted(PROFILE_KEYS)}"
        )
    return data


def _grid_blocks(grid, path: Path) -> list:
    """``grid:`` as a list of filters (a single mapping is one filter; none selects no run)."""
    if grid is None:
        return []
    if isinstance(grid, dict):
        return [grid]
    if not isinstance(grid, list):
        raise ProfileError(path, "'grid' must be a list of filters (models, strategies, ...)")
    return grid


# ----------------------------------------------------------------------------- rehearsal

FDR_SUFFIX = "-fdr"
#: The runs of a rehearsal (``echo-vlsm rehearse``): every strategy of each model, both
#: encoder settings, and the P7 run that pretrains on the synthetic P6.
REHEARSAL_RUNS = ("clipseg_zeroshot_frozen_p1", "clipseg_synthetic_trained_p1",
                  "clipseg_real_frozen_p1", "clipseg_synth-pt-real-ft_trained_p1",
                  "cris_zeroshot_frozen_p1", "cris_real_trained_p1",
                  "cris_synth-pt-real-ft_frozen_p7")
#: Its reduced form in ``make test``: one run that trains, one that only scores.
REHEARSAL_RUNS_QUICK = ("cris_zeroshot_frozen_p1", "clipseg_real_frozen_p1")
#: The folders each step writes (01 writes the phantom only when it makes one).
_PRODUCED = {"01_data_preparation": ("out_dir", "raw_dir"),
             "02_sdm_synthesis": ("out_dir", "sdm_dir")}
_OWN_DIRS = ("figures_dir", "tables_dir")


def fast_dev_profile(prof: Profile, n: int = 2) -> Profile:
    """The rehearsal of ``prof`` (``--fast-dev-run N``, as Lightning's ``fast_dev_run``):
    every job of the same graph with ``fast_dev_run: N`` for the notebooks that take it
    (each run: N batches of one epoch, N validation batches, N test images; the SDM: N steps
    and N images per split), everything else as in the real thing. Every folder the chain
    writes moves to a ``-fdr`` twin (runs root, the exported and synthetic datasets, the SDM,
    figures, tables), so a rehearsal never mixes with real results; its report says it is
    one (the profile is named ``<name>-fdr``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"fast_dev_run={n!r}; expected a whole number >= 1")
    moved: dict[str, str] = {}
    for step, keys in _PRODUCED.items():
        params = prof.steps.get(step) or {}
        for key in keys:
            if key == "raw_dir" and params.get("source", "phantom") != "phantom":
                continue  # a CAMUS download is read, not written
            if isinstance(params.get(key), str):
                moved[params[key]] = params[key].rstrip("/") + FDR_SUFFIX

    for params in prof.datasets.values():  # the exported datasets, the phantom's tree
        for key in ("dataset_dir", "phantom_dir"):
            if isinstance(params.get(key), str) and not (key == "phantom_dir"
                                                         and params.get("echonet_dir")):
                moved[params[key]] = params[key].rstrip("/") + FDR_SUFFIX

    def move(params: dict) -> dict:
        out = {k: moved.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
        for key in _OWN_DIRS:
            if isinstance(out.get(key), str):
                out[key] = out[key].rstrip("/") + FDR_SUFFIX
        return out

    return Profile(
        name=prof.name + FDR_SUFFIX, path=prof.path,
        runs_root=prof.runs_root.rstrip("/") + FDR_SUFFIX,
        steps={k: move(v) for k, v in prof.steps.items()},
        train=move(prof.train), models={k: move(v) for k, v in prof.models.items()},
        runs=list(prof.runs), env=dict(prof.env), kernel=prof.kernel,
        execution_timeout=prof.execution_timeout, slurm=dict(prof.slurm),
        fast_dev_run=n, evaluate_on=list(prof.evaluate_on),
        datasets={k: move(v) for k, v in prof.datasets.items()},
    )
