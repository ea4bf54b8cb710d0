"""Where a run's initial weights came from, as ``summary.json`` records it under
``provenance``: ``pretrained`` resolved (path or hub id and revision, SHA-256 of the files
read), or, for synth-pt-real-ft, the synthetic run's weights it was initialised from (path and
SHA-256) and, under ``as-run``, the best-epoch state it continued."""

from __future__ import annotations

from typing import Any

from echo_vlsm.grid import sha256_file
from echo_vlsm.models.weights import weights_provenance
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.stopping import BestScore

__all__ = ["run_provenance"]


def run_provenance(config: TrainConfig, best: BestScore) -> dict[str, Any]:
    """The ``provenance`` record of a run whose best-score record is ``best`` (which names
    the weights it was initialised from, if any)."""
    if best.initialised_from is not None:
        init = best.initialised_from
        record: dict[str, Any] = {"init": {"path": init, "sha256": sha256_file(init)}}
        if best.continued_from:
            record["continued_from"] = best.continued_from
        return record
    return {"pretrained": weights_provenance(config.model, config.pretrained)}
