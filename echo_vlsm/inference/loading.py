"""The model to segment with: a run folder, an exported model folder, or a built model.

:func:`load_model` turns any of the three into a :class:`LoadedModel`: the module in eval
mode on its device, and what is known of how it was trained (the prompt key, the strategy,
the training config), which ``segment`` uses to pick the prompt and to refuse an empty one.

A folder may come from anywhere, so nothing in it can switch on code execution: a zero-shot
run's ``config.json`` names the pretrained weights it scored, and reading a TorchScript archive
or a pickle among them (``trust_weights``) is allowed only by the caller's ``trust_weights``
argument (``echo-vlsm segment --trust-weights``), whatever the folder's config says.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from echo_vlsm.device import resolve_device, resolve_precision
from echo_vlsm.errors import PathError
from echo_vlsm.grid import CONFIG_FILE, WEIGHTS_FILE
from echo_vlsm.grid import run_problem as grid_run_problem
from echo_vlsm.models import build_model, exported_config
from echo_vlsm.models.folders import check_model_folder
from echo_vlsm.models.weights import UntrustedCheckpointError
from echo_vlsm.paths import resolve
from echo_vlsm.train import TrainConfig
from echo_vlsm.train.checkpoint import load_weights, unwrap
from echo_vlsm.train.data import build


class ModelFolderError(PathError):
    """A folder that is neither a complete run nor an exported model."""


#: A ``config.json`` larger than this is refused unread (the exported ones: ~10 kB).
MAX_CONFIG_BYTES = 4 << 20


@dataclass
class LoadedModel:
    """A model ready to segment and what is known about it.

    ``kind``: ``run``, ``exported`` or ``module``; ``prompt``: the training prompt key
    (``p0``..``p7``, ``random``) or ``None`` when unknown; ``config``: the training config
    as a dict (empty for a bare module)."""

    model: torch.nn.Module
    kind: str
    source: str
    prompt: str | None = None
    strategy: str | None = None
    config: dict = field(default_factory=dict)
    precision: str = "fp32"
    channels_last: bool = True

    @property
    def spec(self):
        return unwrap(self.model).spec

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _run_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete, intact run folder (``grid.run_problem``), or None.
    A zero-shot run has no weights of its own: it scored the initial model."""
    if not (folder / CONFIG_FILE).is_file():
        return f"not a complete run folder: missing {CONFIG_FILE}"
    problem = grid_run_problem(folder)
    return None if problem is None else f"not a complete run folder: {problem}"


def _device(device) -> torch.device:
    return torch.device(device) if isinstance(device, torch.device) else resolve_device(
        device or "auto")


def load_model(source, device: str | torch.device | None = None, *,
               trust_weights: bool = False) -> LoadedModel:
    """A :class:`LoadedModel` from a run folder (``runs/<profile>/<run_id>``), an exported
    model folder (``echo-vlsm export-model``), a ``LoadedModel`` or a built model.

    ``trust_weights``: let a zero-shot CRIS run read its pretrained weights from a TorchScript
    archive (OpenAI's ``RN50.pt``) or a pickle, which runs code stored in the file; only for
    files from a source you trust. The ``trust_weights`` of the folder's ``config.json`` is
    ignored: a folder cannot grant itself trust.

    Raises:
        ModelFolderError: (naming the folder) a folder that is neither a complete run nor an
            exported model, e.g. a run still training.
    """
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, torch.nn.Module):
        if not hasattr(unwrap(source), "spec"):
            raise TypeError(f"{type(source).__name__} is not a segmentation model of "
                            "echo_vlsm.models (no .spec)")
        source.eval()
        return LoadedModel(source, "module", type(unwrap(source)).__name__)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError("model must be a run folder, an exported model folder or a model, got "
                        f"{type(source).__name__}")
    folder = resolve(source)
    if not folder.is_dir():
        raise ModelFolderError(folder, "no such folder (expected a run folder "
                                       "runs/<profile>/<run_id> or an exported model folder)")
    dev = _device(device)
    _readable_config(folder / CONFIG_FILE)
    exported = exported_config(folder)
    if exported is not None:
        return _from_exported(folder, exported, dev)
    problem = _run_problem(folder)
    if problem is not None:
        raise ModelFolderError(folder, f"{problem}; pass a complete run folder "
                                       "(runs/<profile>/<run_id>) or a folder written by "
                                       "echo-vlsm export-model")
    try:
        config = TrainConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
    except (ValueError, TypeError) as err:
        raise ModelFolderError(folder / CONFIG_FILE, f"not a training config ({err})") from err
    config = config.replace(trust_weights=trust_weights)  # the caller's, never the file's
    if config.strategy == "zeroshot":  # the initial model it scored, built as fit built it
        model = _zero_shot_model(folder, config, dev)
    else:
        model = build(config, dev, pretrained=False)
        load_weights(unwrap(model), folder / WEIGHTS_FILE)
        model = model.eval()
    return LoadedModel(model, "run", str(folder), config.prompt, config.strategy,
                       config.to_dict(), resolve_precision(config.precision, dev),
                       config.channels_last)


def _zero_shot_model(folder: Path, config: TrainConfig, dev: torch.device) -> torch.nn.Module:
    """The initial model a zero-shot run scored, with the pretrained weights its config names;
    a file that only code execution could read is refused unless the caller trusts it."""
    try:
        return build(config, dev, pretrained=True).eval()
    except UntrustedCheckpointError as err:
        raise UntrustedCheckpointError(
            f"{folder / CONFIG_FILE}: this zero-shot run's pretrained weights can only be read "
            f"by running code stored in them ({err}). A model folder's config.json cannot "
            "allow that; if you trust the file, say so yourself: echo-vlsm segment "
            "--trust-weights, or load_model(..., trust_weights=True)") from err


def _readable_config(path: Path) -> None:
    """A folder's ``config.json``, when there is one, must be a JSON object of sane size."""
    if not path.is_file():
        return
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ModelFolderError(path, f"{size} bytes; a model's config.json is at most "
                                     f"{MAX_CONFIG_BYTES}")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise ModelFolderError(path, f"not valid JSON ({err})") from err
    if not isinstance(values, dict):
        raise ModelFolderError(path, f"a JSON {type(values).__name__}, not an object")


def _from_exported(folder: Path, exported: dict, dev: torch.device) -> LoadedModel:
    """The model of an exported folder, the folder checked before anything is built or read
    (``models.weights.check_model_folder``: safetensors, JSON and the vocabulary only)."""
    check_model_folder(folder, exported)
    training = exported.get("training_config") or {}
    model = build_model(exported["model"], size=exported["size"], pretrained=folder,
                        encoders=exported.get("encoders", "trained"))
    channels_last = bool(training.get("channels_last", True))
    model = model.to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(model, "exported", str(folder), exported.get("prompt"),
                       exported.get("strategy"), training,
                       resolve_precision(training.get("precision", "auto"), dev), channels_last)
