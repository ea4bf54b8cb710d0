"""The experiment grid and its papermill runner (``echo-vlsm reproduce`` / ``status``).

A *profile* is a YAML parameter file, ``notebooks/params/<name>.yaml``: papermill parameters
for each numbered notebook and the part of the study's grid to run. The parts:

- ``selection``: the study's grid, a profile's selection, shards, ``--only`` filters;
- ``profiles``: reading and checking a profile;
- ``state``: run folders, step markers, failure records on disk;
- ``execute``: ``reproduce``, running the notebooks in dependency order;
- ``status``: what is done, pending, started or failed.

Examples::

    reproduce("demo")                                   # the whole chain, resumable
    reproduce("paper", shard=(2, 4), stages=("runs",))  # GPU 2 of 4, runs only
    status("demo")                                      # DataFrame: name, kind, state, ...
"""

from echo_vlsm.grid import Run, pretrain_source, run_complete
from echo_vlsm.pipeline.errors import PipelineError, ProfileError
from echo_vlsm.pipeline.execute import Outcome, execute_notebook, reproduce
from echo_vlsm.pipeline.profiles import (
    ANALYSIS_STEPS,
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

__all__ = [
    "ANALYSIS_STEPS", "FAILURE_FILE", "GRID_KEYS", "PREPARE_STEPS", "PROFILE_KEYS", "STAGES",
    "TRAIN_NOTEBOOK", "Outcome", "PipelineError", "Profile", "ProfileError", "Run",
    "components", "execute_notebook", "filter_runs", "load_profile", "parse_shard",
    "pretrain_source", "profile_path", "read_failure", "reproduce", "run_complete", "run_dir",
    "select_grid", "shard_runs", "status", "steps_dir", "study_grid", "with_dependencies",
]
