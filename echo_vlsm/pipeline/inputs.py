"""A profile's external inputs, checked before any of its jobs runs.

``echo-vlsm reproduce`` calls :func:`check_profile_inputs` before it starts a kernel or
submits a Slurm job: every input that the jobs of the call read and that no step of the same
profile makes must be there, or the call is refused with one message that lists everything
missing and where each goes. The inputs:

- the CAMUS folder (``01_data_preparation``'s ``source`` when it is a path; ``data/README.md``);
- an EchoNet-Dynamic folder named by any parameter ``echonet_dir`` (``data/README.md``);
- the released SDM-CAMUS folder (``02_sdm_synthesis``'s ``released_dir``) and a trained SDM
  (its ``checkpoint``), unless a step of the profile writes them;
- an exported dataset a run or step reads (``real_dir``, ``synthetic_dir``) that no step of the
  profile writes;
- pretrained weights (``pretrained`` of the runs, ``vqa_model`` of notebook 03): a local file or
  folder must exist; a hub id must be in the Hugging Face cache when the profile's environment
  (or this process's) sets ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` (``docs/weights.md``);
- a GPU when a job asks for ``device: cuda``: here for the local launcher, in the Slurm
  options (``gpus_per_job``) for ``--launcher slurm``.

Only the jobs the call would run are checked (those not done for their inputs), so a finished
``01_data_preparation`` no longer needs the CAMUS download. A folder that a step of the profile
writes (``out_dir``, ``sdm_dir``, the phantom's ``raw_dir``) is never an external input.

Examples::

    check_profile_inputs("demo")           # passes: the demo makes everything it reads
    check_profile_inputs("paper")          # MissingInputsError without CAMUS, SDM-CAMUS, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echo_vlsm.paths import resolve
from echo_vlsm.pipeline.errors import ProfileError
from echo_vlsm.pipeline.graph import Job, job_state
from echo_vlsm.pipeline.profiles import STAGES

if TYPE_CHECKING:
    from echo_vlsm.pipeline.execute import Plan

DATA_DOC = "data/README.md"
WEIGHTS_DOC = "docs/weights.md"
#: The parameters of a step that name folders it writes (01's ``raw_dir`` only for the phantom).
PRODUCED_KEYS = ("out_dir", "sdm_dir")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Missing:
    """One external input that is not there: what it is, where it was looked for, why it
    does not do, which jobs need it, and where it goes (``remedy``: "see data/README.md ...")."""

    what: str
    where: str
    problem: str
    needed_by: tuple[str, ...]
    remedy: str

    def line(self) -> str:
        jobs = ", ".join(self.needed_by[:3])
        if len(self.needed_by) > 3:
            jobs += f" and {len(self.needed_by) - 3} more"
        return f"- {self.what} {self.where}: {self.problem} (needed by {jobs}); {self.remedy}"


class MissingInputsError(ProfileError):
    """A profile whose external inputs are not all there; ``.missing`` lists them."""

    def __init__(self, path: str | os.PathLike, missing: list[Missing], name: str):
        self.missing = missing
        lines = "\n".join(m.line() for m in missing)
        super().__init__(path, f"profile {name}: {len(missing)} input"
                               f"{'s' if len(missing) != 1 else ''} missing, nothing was run:\n"
                               f"{lines}\n`make rehearsal` (echo-vlsm rehearse) tries the paper "
                               "profile on stand-ins in the same formats, without them.")

    def __reduce__(self):  # survives pickling (PathError's takes the message only)
        return (_rebuild, (str(self.path), self.missing, self.problem))


def _rebuild(path: str, missing: list[Missing], problem: str) -> MissingInputsError:
    err = MissingInputsError.__new__(MissingInputsError)
    ProfileError.__init__(err, path, problem)
    err.missing = missing
    return err


# ----------------------------------------------------------------------------- the plan


@dataclass
class _Context:
    """What the checks need: the root, the environment the workers get, what the steps make."""

    root: Path
    env: Mapping[str, str]
    produced: dict[Path, str]          # folder -> the step that writes it
    launcher: str
    slurm: Mapping[str, object]
    gpu_count: Callable[[], int]

    @property
    def offline(self) -> bool:
        return any(str(self.env.get(v, "")).lower() in _TRUE for v in OFFLINE_VARIABLES)

    def path(self, value: object) -> Path:
        return resolve(str(value), self.root)

    def made_by_other(self, path: Path, job: Job) -> bool:
        """True when a step other than ``job`` writes ``path`` or a folder above it."""
        for folder, step in self.produced.items():
            if step != job.name and (path == folder or folder in path.parents):
                return True
        return False


def produced_folders(jobs: Iterable[Job], root: Path) -> dict[Path, str]:
    """``{folder: step}`` of the folders the profile's steps write."""
    out: dict[Path, str] = {}
    for job in jobs:
        if job.kind != "step":
            continue
        keys = list(PRODUCED_KEYS)
        if job.notebook == "01_data_preparation" and job.params.get("source", "phantom") \
                == "phantom":
            keys.append("raw_dir")
        for key in keys:
            if isinstance(job.params.get(key), str):
                out[resolve(job.params[key], root)] = job.name
    return out


def jobs_to_check(p: Plan, keep_stale: bool = False) -> list[Job]:
    """The jobs of plan ``p`` that the call would run: not done for their inputs (a stale
    run kept by ``--keep-stale`` is not run)."""
    memo: dict = {}
    out = []
    for name in p.in_call:
        job = p.by_name[name]
        state = job_state(job, p.by_name, memo).state
        if state == "done" or (state == "stale" and keep_stale and job.kind == "run"):
            continue
        out.append(job)
    return out


# ----------------------------------------------------------------------------- the checks

#: (what, where, problem, remedy) found for one job; the key that merges it across jobs.
_Found = tuple[str, str, str, str]


def _folder(ctx: _Context, job: Job, key: str, what: str, doc: str,
            looks_right: Callable[[Path], str | None] | None = None) -> _Found | None:
    """A folder parameter ``key`` of ``job``: missing, not a folder, or (``looks_right``)
    not in the expected layout; None when fine or made by another step."""
    value = job.params.get(key)
    if not isinstance(value, str) or not value:
        return None
    path = ctx.path(value)
    if ctx.made_by_other(path, job):
        return None
    if not path.exists():
        return what, str(path), "does not exist", doc
    if not path.is_dir():
        return what, str(path), "is not a folder", doc
    problem = looks_right(path) if looks_right is not None else None
    return (what, str(path), problem, doc) if problem else None


def _camus_layout(path: Path) -> str | None:
    from echo_vlsm.data.camus import find_root

    try:
        find_root(path)
    except ValueError as err:
        return str(getattr(err, "problem", err))
    return None


def _echonet_layout(path: Path) -> str | None:
    from echo_vlsm.data.echonet import find_root

    try:
        find_root(path)
    except ValueError as err:
        return str(getattr(err, "problem", err))
    return None


def _released_layout(path: Path) -> str | None:
    if any((view / "images").is_dir() for view in path.iterdir() if view.is_dir()):
        return None
    return "holds no <view>/images/<split>/ folders (the SDM-CAMUS release's layout)"


def _dataset_layout(path: Path) -> str | None:
    return None if (path / "records.csv").is_file() else \
        "has no records.csv (not an exported dataset; notebook 01 or 02 writes one)"


def _data_inputs(ctx: _Context, job: Job) -> list[_Found | None]:
    """The data folders ``job`` reads and no other step writes."""
    readme = f"see {DATA_DOC}"
    found: list[_Found | None] = []
    if job.notebook == "01_data_preparation" and job.params.get("source", "phantom") != "phantom":
        found.append(_folder(ctx, job, "source", "CAMUS folder", f"{readme} (CAMUS)",
                             _camus_layout))
    found.append(_folder(ctx, job, "echonet_dir", "EchoNet-Dynamic folder",
                         f"{readme} (EchoNet-Dynamic)", _echonet_layout))
    if job.notebook == "02_sdm_synthesis":
        found.append(_folder(ctx, job, "released_dir", "SDM-CAMUS folder",
                             f"{readme} (SDM-CAMUS), or set released_dir: null to train "
                             "the SDM here", _released_layout))
        found.append(_file_or_folder(ctx, job, "checkpoint", "trained SDM",
                                     "see notebooks/02_sdm_synthesis.ipynb (checkpoint)"))
    if job.notebook != "01_data_preparation":
        found.append(_folder(ctx, job, "real_dir", "exported dataset", readme,
                             _dataset_layout))
    synthetic = job.kind == "run" and job.params.get("strategy") in (
        "synthetic", "synth-pt-real-ft", "mixed")
    if synthetic:
        found.append(_folder(ctx, job, "synthetic_dir", "exported synthetic dataset", readme,
                             _dataset_layout))
    return found


def _file_or_folder(ctx: _Context, job: Job, key: str, what: str, doc: str) -> _Found | None:
    value = job.params.get(key)
    if not isinstance(value, str) or not value:
        return None
    path = ctx.path(value)
    if ctx.made_by_other(path, job) or path.exists():
        return None
    return what, str(path), "does not exist", doc


def _hub(ctx: _Context, hub_id: str, what: str, doc: str) -> _Found | None:
    """A hub id: only checkable offline, where the cache must hold it."""
    from echo_vlsm.models.weights import hub_cached

    if not ctx.offline or hub_cached(hub_id):
        return None
    offline = ", ".join(f"{v}={ctx.env[v]}" for v in OFFLINE_VARIABLES if v in ctx.env)
    return what, repr(hub_id), f"not in the Hugging Face cache, and {offline} forbids the " \
                               "download", doc


def _clipseg_weights(ctx: _Context, job: Job, pretrained: object) -> _Found | None:
    from echo_vlsm.models.weights import clipseg_source, local_path

    doc = f"see {WEIGHTS_DOC} (CLIPSeg)"
    source, via = clipseg_source(pretrained, ctx.env)
    path = local_path(source, ctx.root)
    if path is None:
        return _hub(ctx, str(source), f"CLIPSeg weights{via}", doc)
    if ctx.made_by_other(path, job):
        return None
    if not path.exists():
        return f"CLIPSeg weights{via}", str(path), "does not exist", doc
    if not (path / "config.json").is_file():
        return f"CLIPSeg weights{via}", str(path), "is not a folder saved with " \
                                                   "save_pretrained (no config.json)", doc
    return None


def _cris_weights(ctx: _Context, job: Job, pretrained: object) -> _Found | None:
    from echo_vlsm.models.weights import WeightsNotFoundError, cris_weights_file

    doc = f"see {WEIGHTS_DOC} (CRIS)"
    try:
        path = cris_weights_file(pretrained, ctx.env, ctx.root)
    except WeightsNotFoundError as err:
        text = str(err).split("; see ")[0]
        return "CRIS weights", "(pretrained: true)", text, doc
    if ctx.made_by_other(path, job) or path.is_file():
        return None
    return "CRIS weights", str(path), "does not exist", doc


def _weight_inputs(ctx: _Context, job: Job) -> list[_Found | None]:
    """The pretrained weights ``job`` reads: a run's ``pretrained``, notebook 03's VQA model."""
    found: list[_Found | None] = []
    pretrained = job.params.get("pretrained")
    if job.kind == "run" and pretrained not in (None, False):
        model = job.params.get("model")
        if model == "clipseg":
            found.append(_clipseg_weights(ctx, job, pretrained))
        elif model == "cris":
            found.append(_cris_weights(ctx, job, pretrained))
    vqa = job.params.get("vqa_model")
    if job.params.get("shape_backend") == "vqa" and isinstance(vqa, str) and vqa:
        from echo_vlsm.models.weights import local_path

        path = local_path(vqa, ctx.root)
        if path is None:
            found.append(_hub(ctx, vqa, "VQA model", "see notebooks/03_prompt_generation.ipynb"))
        elif not path.exists():
            found.append(("VQA model", str(path), "does not exist",
                          "see notebooks/03_prompt_generation.ipynb"))
    return found


def _wants_gpu(job: Job) -> bool:
    return str(job.params.get("device", "")).startswith("cuda")


def _gpu(ctx: _Context, jobs: list[Job]) -> Missing | None:
    """A GPU for the jobs that set ``device: cuda``: visible here (local launcher), or asked
    of Slurm (``gpus_per_job``)."""
    names = tuple(j.name for j in jobs if _wants_gpu(j))
    if not names:
        return None
    if ctx.launcher == "slurm":
        if int(str(ctx.slurm.get("gpus_per_job") or 0)) > 0:
            return None
        return Missing("a GPU", "in the Slurm options", "the jobs set device: cuda but no GPU "
                       "is requested", names, "pass --gpus-per-job N, or set gpus_per_job in "
                       "the profile's slurm: mapping")
    if ctx.gpu_count() > 0:
        return None
    return Missing("a GPU", "on this machine", "the jobs set device: cuda but torch sees no "
                   "CUDA device", names, "run on a GPU machine, submit with --launcher slurm "
                   "--gpus-per-job 1, or set device: cpu (or auto) in the profile")


def cuda_device_count() -> int:
    """CUDA devices torch sees in this process (0 without a GPU or a CUDA build)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def find_missing(p: Plan, *, keep_stale: bool = False, launcher: str = "local",
                 slurm: Mapping[str, object] | None = None,
                 env: Mapping[str, str] | None = None,
                 gpu_count: Callable[[], int] = cuda_device_count) -> list[Missing]:
    """Every external input of plan ``p``'s jobs to run that is not there, each input once
    with every job that needs it. ``env``: the workers' environment (default: this process's,
    with the profile's ``env`` on top, as the workers get it)."""
    ctx = _Context(p.root, {**os.environ, **p.prof.env} if env is None else env,
                   produced_folders(p.graph, p.root), launcher,
                   {**(p.prof.slurm or {}), **(slurm or {})}, gpu_count)
    jobs = jobs_to_check(p, keep_stale)
    merged: dict[_Found, list[str]] = {}
    for job in jobs:
        for found in [*_data_inputs(ctx, job), *_weight_inputs(ctx, job)]:
            if found is not None:
                merged.setdefault(found, []).append(job.name)
    missing = [Missing(what, where, problem, tuple(names), doc)
               for (what, where, problem, doc), names in merged.items()]
    gpu = _gpu(ctx, jobs)
    return missing + ([gpu] if gpu is not None else [])


def check_inputs(p: Plan, **kwargs: Any) -> None:
    """Raise :class:`MissingInputsError` listing every input ``find_missing`` reports."""
    missing = find_missing(p, **kwargs)
    if missing:
        raise MissingInputsError(p.prof.path, missing, p.prof.name)


def check_profile_inputs(profile: str | os.PathLike, *, root: str | os.PathLike | None = None,
                         notebooks_dir: str | os.PathLike | None = None,
                         shard: tuple[int, int] | None = None, only: Iterable[str] | None = None,
                         stages: Iterable[str] = STAGES, fast_dev_run: int | None = None,
                         **kwargs: Any) -> None:
    """:func:`check_inputs` for the call ``reproduce`` would make with these arguments (the
    same plan: profile, shard, ``only``, stages, rehearsal); ``kwargs`` go to ``find_missing``.

    Raises:
        MissingInputsError: (a ``ProfileError``) one message listing every missing input.
    """
    from echo_vlsm import pipeline  # the package, which this module's importers load first

    p = pipeline.plan(profile, root=root, notebooks_dir=notebooks_dir, shard=shard, only=only,
             stages=stages, fast_dev_run=fast_dev_run, log=lambda _msg: None)
    check_inputs(p, **kwargs)


__all__ = ["Missing", "MissingInputsError", "check_inputs", "check_profile_inputs",
           "cuda_device_count", "find_missing", "jobs_to_check", "produced_folders"]
