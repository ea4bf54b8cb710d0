"""The experiment grid and its papermill runner (``echo-vlsm reproduce`` / ``status``).

A *profile* is a YAML parameter file, ``notebooks/params/<name>.yaml``: papermill parameters
for each numbered notebook and the part of the study's grid to run. The parts:

- ``selection``: the study's grid, a profile's selection, shards, ``--only`` filters;
- ``profiles``: reading and checking a profile;
- ``graph``: the profile as a graph of jobs (01, 02, 03 per dataset, each run, 05, 06), each
  complete only for the parameters and inputs it was made from;
- ``parameters``: every parameter checked against its notebook's ``parameters`` cell;
- ``locks``: one process per job (``flock``);
- ``worker``: runs one job (lock, check, papermill, record) for every launcher;
- ``execute``: ``reproduce``: the local pool (``jobs=N``, one per GPU or cores split);
- ``slurm``: the graph as Slurm jobs with ``afterok`` dependencies (submitit);
- ``state``: run folders, failure records on disk;
- ``status``: each job's state (done, stale, damaged, running, queued, failed, ...).

Examples::

    reproduce("demo")                                   # the whole chain, resumable
    reproduce("paper", shard=(2, 4), stages=("runs",))  # GPU 2 of 4, runs only
    status("demo")                                      # DataFrame: name, kind, state, ...
"""

from echo_vlsm.grid import Run, pretrain_source, run_complete
from echo_vlsm.paths import project_root
from echo_vlsm.pipeline.errors import PipelineError, ProfileError
from echo_vlsm.pipeline.execute import Outcome, Plan, plan, reproduce
from echo_vlsm.pipeline.graph import Job, JobState, build_graph, job_state
from echo_vlsm.pipeline.locks import JobLock, lock_holder
from echo_vlsm.pipeline.parameters import notebook_parameters
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
    BEYOND_STEPS,
    CLINICAL_STEPS,
    EXPLORE_STEPS,
    PREPARE_STEPS,
    PROFILE_KEYS,
    STAGES,
    TRAIN_NOTEBOOK,
    Profile,
    load_profile,
    profile_path,
)
from echo_vlsm.pipeline.selection import (
    GRID_KEYS,
    components,
    filter_runs,
    parse_shard,
    select_grid,
    shard_runs,
    study_grid,
    with_dependencies,
)
from echo_vlsm.pipeline.state import FAILURE_FILE, read_failure, run_dir, steps_dir
from echo_vlsm.pipeline.status import status
from echo_vlsm.pipeline.worker import execute_notebook

__all__ = [
    "ANALYSIS_STEPS", "BEYOND_STEPS", "CLINICAL_STEPS", "EXPLORE_STEPS", "FAILURE_FILE",
    "GRID_KEYS", "PREPARE_STEPS", "PROFILE_KEYS", "STAGES",
    "TRAIN_NOTEBOOK", "Job", "JobLock", "JobState", "Outcome", "PipelineError", "Plan",
    "Profile", "ProfileError", "Run", "build_graph", "components", "execute_notebook",
    "filter_runs", "job_state", "load_profile", "lock_holder", "notebook_parameters",
    "parse_shard", "plan",
    "pretrain_source", "profile_path", "project_root", "read_failure", "reproduce",
    "run_complete", "run_dir",
    "select_grid", "shard_runs", "status", "steps_dir", "study_grid", "with_dependencies",
]
