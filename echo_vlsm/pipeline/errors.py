"""The runner's two errors: a profile that cannot be used, a step or run that failed."""

from __future__ import annotations

from echo_vlsm.errors import PathError


class ProfileError(PathError):
    """A profile file that cannot be used; the message names the file and the problem."""


class PipelineError(RuntimeError):
    """A step or run failed (its record is in the message and in its failure file)."""
