"""Building the stand-ins: each in its real format, each written once and atomically.

Under ``root``::

    camus-2019/             CAMUS 2019 layout from the phantom (training/, testing/, .mhd)
    sdm-camus/              released SDM-CAMUS layout (<view>/images|annotations/<split>/)
    clipseg-rd64-refined/   transformers save_pretrained folder, CIDAS/clipseg-rd64-refined's
                            configuration, random weights
    clip/RN50.pt            TorchScript archive with OpenAI CLIP RN50's keys (fp16), random
    cris/cris_best.pth      {"state_dict": {"module.<key>": tensor}} of the paper-size CRIS
    standins.json           what was built, with which settings (written after each part)

A part is skipped when it exists (a folder or file appears only complete: it is written
under a temporary name and renamed); a lock file keeps two processes from building at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from echo_vlsm.io import atomic_path, write_json_atomic, write_png

#: The parts :func:`build_standins` writes and their place under ``root``.
STANDINS = {
    "camus": "camus-2019",
    "released": "sdm-camus",
    "clipseg": "clipseg-rd64-refined",
    "rn50": "clip/RN50.pt",
    "cris": "cris/cris_best.pth",
}
MANIFEST = "standins.json"
LOCK = ".standins.lock"
#: Keys OpenAI's CLIP archive holds beside the weights (integers, not parameters).
CLIP_EXTRA = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


@contextlib.contextmanager
def _locked(root: Path):
    """Hold an exclusive lock on ``root/.standins.lock`` (waits for another builder)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _atomic_dir(path: Path):
    """Yield an empty temporary folder next to ``path``; renamed onto it on success."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- data ----------------------------------------------------------------------------------
def write_released_standin(camus_root: str | os.PathLike, out: str | os.PathLike, *,
                           n_per_map: int = 2, size: int = 256, progress: bool = True) -> Path:
    """A folder in the layout of the released SDM-CAMUS set (``echo_vlsm.sdm.released``) made
    from a CAMUS tree: for each training and validation image, ``n_per_map`` samples
    ``<view>_<phase>/images/<training|validation>/<patient>_<view>_<phase>_<split>_<k>.png``
    (the real image, resized to ``size``, with a little noise per ``k``) and its 5-class
    annotation (0 outside, 1 LV, 2 tissue, 3 myocardium, 4 LA); the test images go to
    ``testing/`` with CAMUS-coded annotations, as in the release (the importer skips them)."""
    from echo_vlsm.data.camus import read_camus
    from echo_vlsm.imaging import resize_image, resize_label
    from echo_vlsm.sdm.labels import sector_mask, to_sdm_map

    out = Path(out)
    folders = {"train": "training", "val": "validation", "test": "testing"}
    records = read_camus(Path(camus_root))
    for rec in tqdm(records, desc="released stand-in", unit="img",
                    disable=None if progress else True):
        image, label = rec.load()
        image, label = resize_image(image, size), resize_label(label, size)
        view = f"{rec.view}_{rec.phase}"
        split = folders[rec.split]
        base = f"{rec.patient}_{view}_{split}"
        if rec.split == "test":
            write_png(out / view / "images" / split / f"{base}.png", image)
            write_png(out / view / "annotations" / split / f"{base}.png", label)
            continue
        sdm_map = to_sdm_map(label, sector_mask(image))
        for k in range(n_per_map):
            rng = np.random.default_rng([k, zlib.crc32(base.encode())])
            noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
            noisy[sdm_map == 0] = 0
            write_png(out / view / "images" / split / f"{base}_{k}.png", noisy)
            write_png(out / view / "annotations" / split / f"{base}_{k}.png", sdm_map)
    return out


# -- weights -------------------------------------------------------------------------------
class _Holder(nn.Module):
    """A module that only holds parameters and buffers (scriptable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_openai_torchscript(state: dict[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Save ``state`` as OpenAI's CLIP archives hold it: a TorchScript module whose
    ``state_dict()`` has the given keys, floating tensors in fp16 as parameters, the rest as
    buffers; read back with ``torch.jit.load`` (``trust=True`` in ``read_state_dict``)."""
    root = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, _Holder())
            node = getattr(node, name)
        if value.is_floating_point() and value.ndim > 0:
            node.register_parameter(leaf, nn.Parameter(value.half(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.clone())
    path = Path(path)
    with warnings.catch_warnings():  # torch.jit is deprecated; OpenAI's format needs it
        warnings.simplefilter("ignore", FutureWarning)
        with atomic_path(path) as tmp:
            torch.jit.save(torch.jit.script(root), str(tmp))
    return path


def _write_clipseg(path: Path, seed: int) -> None:
    from echo_vlsm.models.clipseg import build_clipseg

    torch.manual_seed(seed)
    net = build_clipseg("paper").net  # CIDAS/clipseg-rd64-refined's configuration
    with _atomic_dir(path) as tmp:
        net.save_pretrained(str(tmp))


def _write_rn50(path: Path, seed: int) -> None:
    from echo_vlsm.models.cris import CONFIGS, build_clip

    torch.manual_seed(seed)
    clip = build_clip(CONFIGS["paper"])
    state = {k: v for k, v in clip.state_dict().items() if ".connect." not in k}
    state.update({k: torch.tensor(v) for k, v in CLIP_EXTRA.items()})
    save_openai_torchscript(state, path)


def _write_cris(path: Path, seed: int) -> None:
    from echo_vlsm.models.cris import build_cris

    torch.manual_seed(seed)
    model = build_cris("paper")
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"epoch": 0, "state_dict": state}, tmp)


# -- all of them ---------------------------------------------------------------------------
def build_standins(root: str | os.PathLike, *, parts=tuple(STANDINS), n_patients: int = 12,
                   released_per_map: int = 2, released_size: int = 256, seed: int = 0,
                   progress: bool = True) -> dict[str, Path]:
    """Build the stand-ins named in ``parts`` (keys of :data:`STANDINS`) under ``root``,
    skipping those that exist; return ``{part: path}`` for all of ``parts``.

    ``n_patients`` phantom patients in the CAMUS 2019 layout (12: 10 train, 1 validation,
    1 test; the testing patients are numbered from 0001, so a validation and a test stem
    repeat, as in the real release); the released set has ``released_per_map`` samples per
    training and validation image at ``released_size`` px. The weights are random (seeded by
    ``seed``) and take about 1.4 GB (CLIPSeg 0.6, RN50 0.2, CRIS 0.6).

    Raises:
        ValueError: an unknown part.
    """
    from echo_vlsm.data.phantom import write_phantom

    root = Path(root)
    unknown = sorted(set(parts) - set(STANDINS))
    if unknown:
        raise ValueError(f"unknown stand-in parts {unknown}; expected some of {list(STANDINS)}")
    if "released" in parts and "camus" not in parts:
        parts = ("camus", *parts)  # the released set is made from the tree
    paths = {part: root / STANDINS[part] for part in parts}
    settings = {"n_patients": n_patients, "released_per_map": released_per_map,
                "released_size": released_size, "seed": seed}
    with _locked(root):
        for part in STANDINS:
            if part not in parts:
                continue
            path = paths[part]
            if part == "camus":  # resumable by itself; a finished tree is left as it is
                if not (path / "phantom.json").is_file():
                    write_phantom(path, n_patients=n_patients, seed=seed, layout="2019")
            elif path.exists():
                continue
            elif part == "released":
                with _atomic_dir(path) as tmp:
                    write_released_standin(paths["camus"], tmp, n_per_map=released_per_map,
                                           size=released_size, progress=progress)
            elif part == "clipseg":
                _write_clipseg(path, seed)
            elif part == "rn50":
                _write_rn50(path, seed)
            else:
                _write_cris(path, seed)
            _note(root, part, path, settings)
    return paths


def _note(root: Path, part: str, path: Path, settings: dict) -> None:
    manifest = root / MANIFEST
    try:
        have = json.loads(manifest.read_text())
    except (OSError, ValueError):
        have = {}
    have[part] = {"path": str(path.relative_to(root)), **settings}
    write_json_atomic(manifest, have)


def standin_env(paths: dict[str, Path]) -> dict[str, str]:
    """The environment variables that make ``pretrained=True`` resolve to the stand-in
    weights (see ``docs/weights.md``): ``ECHO_VLSM_CLIPSEG_WEIGHTS``,
    ``ECHO_VLSM_CRIS_WEIGHTS`` and ``ECHO_VLSM_CLIP_RN50``, for the parts in ``paths``."""
    from echo_vlsm.models.weights import ENV_CLIP_RN50, ENV_CLIPSEG, ENV_CRIS

    names = {"clipseg": ENV_CLIPSEG, "cris": ENV_CRIS, "rn50": ENV_CLIP_RN50}
    return {names[k]: str(Path(v).resolve()) for k, v in paths.items() if k in names}
