"""Frozen encoders computed once: what a run's frozen CLIP encoders compute, per split.

With ``encoders="frozen"`` the CLIP encoders stay in eval mode and the engine has no
augmentation, so what they compute from an image or a prompt text is the same every epoch.
``prepare_cache`` computes it once per split (training, validation): per unique image
(``Triplets.images``) and per distinct tokenized text (every phrasing of every triplet);
the engine then trains the rest of the model from it (``CachedModel`` in place of the model
in the training steps and validation passes). The test split is scored once, by the whole
model.

What is cached ends where training begins (``SegmentationModel.encode_frozen_image`` and
``encode_frozen_text``): CLIPSeg's activations of the extracted vision layers and its
projected text feature; CRIS's C3, C4, the last ResNet stage's output and the frozen
attention branch of its spatial pool (the pool's ``connect`` residual always trains, so it
runs every step on the cached stage output), its word features and sentence feature.

Files: one per split and kind (``image``, ``text``) in ``<cache_dir or dataset>/.cache/
frozen/``, keyed by all the values depend on: the frozen weights, the images' bytes or the
texts' token ids, the model's code and torch/transformers/open_clip versions, spec,
precision, device type, memory format; old keys' files may be deleted any time. Builders
write their own preallocated temporary file (``io.atomic_path``; a full disk is a
``DiskFullError`` naming it, never a SIGBUS) and rename it into place.

Held: on the training device when it fits (``DEVICE_SHARE`` of the device's free memory, or
of the CPU's available memory), else memory-mapped from its file (the size is printed);
where the folder cannot be written, in memory if it fits, else a ``MemoryError`` saying so.
The results equal the uncached run's within float tolerance (the encoders see other batches).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import inspect
import itertools
import json
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from echo_vlsm.device import autocast
from echo_vlsm.io import atomic_path, clean_temp_files
from echo_vlsm.models.base import SegmentationModel
from echo_vlsm.train.checkpoint import unwrap_segmentation
from echo_vlsm.train.config import TrainConfig
from echo_vlsm.train.data import TrainingData
from echo_vlsm.train.decoding import CacheWarning
from echo_vlsm.train.triplets import Triplets, normalise

__all__ = ["DEVICE_SHARE", "CachedModel", "Encoded", "FrozenCache", "SplitFeatures",
           "cache_record", "cache_unavailable", "distinct_texts", "frozen_fingerprint",
           "prepare_cache", "read_features", "split_features", "write_features"]

#: A file's first bytes; then the header's length (uint64, little endian), the JSON header,
#: zeros to a multiple of ``ALIGN`` and the tensors' bytes, each at a multiple of ``ALIGN``.
MAGIC = b"EVLSMFC1"
FORMAT_VERSION = 1
ALIGN = 64
#: Cached values are held on the training device when they take at most this share of its
#: free memory (the CPU: of its available memory); else they are memory-mapped.
DEVICE_SHARE = 0.25  # of the free memory, per split: room for the optimiser and activations
_MAX_HEADER = 1 << 20
_DTYPES = {str(t).removeprefix("torch."): t
           for t in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


# -- when it applies ------------------------------------------------------------------------
def cache_unavailable(config: TrainConfig, model: nn.Module) -> str | None:
    """Why a run trains without the cache, or None when it uses it."""
    if not config.frozen_cache:
        return "switched off (frozen_cache: false)"
    if config.encoders != "frozen":
        return "encoders trained"
    if config.strategy == "zeroshot":
        return "zeroshot trains nothing"
    if not unwrap_segmentation(model).splits_frozen:
        return f"{type(unwrap_segmentation(model)).__name__} has no frozen encoders to split at"
    return None


# -- keys -----------------------------------------------------------------------------------
def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _raw(t: torch.Tensor) -> memoryview:
    """A tensor's bytes (on the CPU, contiguous)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    array: Any = flat.view(torch.uint8).numpy()  # numpy's stubs do not declare the buffer
    return memoryview(array)


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}".encode())
    h.update(_raw(t))
    return h.hexdigest()


def frozen_fingerprint(model: SegmentationModel) -> str:
    """SHA-256 of the frozen encoders' weights and buffers (``encoder_modules`` without
    ``always_trained_modules``): what the cached values are computed with."""
    trained = {t.data_ptr() for m in model.always_trained_modules()
               for t in m.state_dict().values() if t.numel()}
    h = hashlib.sha256()
    for i, module in enumerate(model.encoder_modules()):
        for name, t in sorted(module.state_dict().items()):
            if t.numel() and t.data_ptr() in trained:
                continue
            h.update(f"{i}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(_raw(t))
    return h.hexdigest()


def _code_digest(model: SegmentationModel) -> str:
    """What the encoders run: the source of the model's module, of the contract and of
    ``normalise``, and the versions of the libraries whose layers they call."""
    files = {inspect.getsourcefile(c) for c in (type(model), SegmentationModel, normalise)}
    libs = sorted((d.metadata["Name"], d.version) for d in metadata.distributions()
                  if d.metadata["Name"] in ("torch", "transformers", "open_clip_torch"))
    return _digest([Path(f).read_text() for f in sorted(f for f in files if f)] + [libs])

# -- the file -------------------------------------------------------------------------------
def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _layout(first: list[torch.Tensor], rows: int) -> list[dict]:
    """Dtype, shape, offset (from the data's start) and size of each tensor of ``rows``."""
    entries, offset = [], 0
    for t in first:
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"frozen cache: cannot store a {t.dtype} tensor")
        row_bytes = t[0].numel() * t.element_size()
        entries.append({"dtype": dtype, "shape": [rows, *t.shape[1:]], "offset": offset,
                        "row_bytes": row_bytes, "nbytes": rows * row_bytes})
        offset = _align(offset + rows * row_bytes)
    return entries


def _preallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of the file (a full disk raises ``ENOSPC`` here); where the
    file system cannot, write zeros."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros, done = bytes(1 << 22), 0
    while done < size:
        done += os.pwrite(fd, zeros[: min(len(zeros), size - done)], done)


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data).cast("B")
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_features(path: Path, key: str, rows: int,
                   batches: Iterator[list[torch.Tensor]]) -> None:
    """Write ``rows`` rows of tensors, given batch by batch, to ``path`` under ``key``:
    preallocated (``io.DiskFullError`` naming ``path`` on a full disk), then renamed into
    place whole (``io.atomic_path``)."""
    first = next(batches)
    entries = _layout(first, rows)
    body = {"format": FORMAT_VERSION, "key": key, "rows": rows, "tensors": entries}
    start = _align(16 + len(json.dumps(body)) + 64)  # room for the two numbers added below
    total = start + entries[-1]["offset"] + entries[-1]["nbytes"]
    header = json.dumps({**body, "data_offset": start, "total": total}).encode()
    assert 16 + len(header) <= start  # two integers take under 64 characters
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_RDWR)
        try:
            _preallocate(fd, total)
            _pwrite_all(fd, MAGIC + struct.pack("<Q", len(header)) + header, 0)
            done = 0
            for batch in itertools.chain([first], batches):
                for entry, t in zip(entries, batch, strict=True):
                    if list(t.shape[1:]) != entry["shape"][1:]:
                        raise ValueError(f"{path}: a batch of shape {tuple(t.shape)}, "
                                         f"expected rows of {entry['shape'][1:]}")
                    _pwrite_all(fd, _raw(t), start + entry["offset"] + done * entry["row_bytes"])
                done += int(batch[0].shape[0])
            if done != rows:
                raise ValueError(f"{path}: {done} rows computed, {rows} expected")
        finally:
            os.close(fd)


def read_features(path: Path, key: str) -> list[torch.Tensor] | None:
    """The tensors of ``path`` memory-mapped (copy-on-write), or None when there is no file;
    a file of another key, format or size (damaged) is None too, with a ``CacheWarning``
    naming it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                raise ValueError("not a frozen-cache file")
            (n,) = struct.unpack("<Q", head[8:])
            if n > _MAX_HEADER:
                raise ValueError(f"header of {n} bytes")
            header = json.loads(f.read(n))
        if header.get("format") != FORMAT_VERSION or header.get("key") != key:
            raise ValueError("another format or key than its name says")
        if header.get("total") != size:
            raise ValueError(f"{size} bytes, its header says {header.get('total')}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable frozen cache ({exc}); computing it again",
                      CacheWarning, stacklevel=2)
        return None
    mapped = np.memmap(path, dtype=np.uint8, mode="c")
    start = int(header["data_offset"])
    out = []
    for e in header["tensors"]:
        raw = torch.from_numpy(mapped[start + e["offset"]: start + e["offset"] + e["nbytes"]])
        out.append(raw.view(_DTYPES[e["dtype"]]).reshape(e["shape"]))
    return out


# -- one kind of cached values --------------------------------------------------------------
@dataclass
class Encoded:
    """One kind of cached values (``image`` or ``text``): tensors whose first axis is the
    row (an image, a text); their file (None when not persisted), whether this call computed
    them (else they were read), their size and whether they are held on the device (else
    memory-mapped)."""

    tensors: list[torch.Tensor]
    path: Path | None
    built: bool
    nbytes: int
    resident: bool

    def record(self) -> dict:
        return {"rows": int(self.tensors[0].shape[0]), "bytes": self.nbytes,
                "file": str(self.path) if self.path is not None else None,
                "built": self.built, "held": "device" if self.resident else "memory-mapped"}


def _free_memory(device: torch.device) -> int | None:
    """Free bytes of a CUDA device, the CPU's available memory; None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
    return None


def _held(tensors: list[torch.Tensor], device: torch.device,
          resident: bool | None) -> tuple[list[torch.Tensor], bool]:
    """The tensors on ``device`` when they fit there (or ``resident`` says so), else as
    they are (memory-mapped)."""
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    if resident is None:
        free = _free_memory(device)
        resident = free is None or nbytes <= DEVICE_SHARE * free
    if not resident:
        return tensors, False
    if device.type == "cpu":
        return [t.clone() for t in tensors], True
    return [t.to(device) for t in tensors], True


def _encoded(folder: Path | None, stem: str, key: str, rows: int,
             batches: Callable[[], Iterator[list[torch.Tensor]]], device: torch.device,
             resident: bool | None) -> Encoded:
    """Cached values read from ``<folder>/<stem>-<key>.feat``, else computed and written
    there (or, without a folder, computed on the device)."""
    if folder is None:  # in memory when it fits there (DEVICE_SHARE), else an error
        it = batches()
        first = next(it)
        nbytes = rows * sum(t[0].numel() * t.element_size() for t in first)
        free = _free_memory(device)
        if free is not None and nbytes > DEVICE_SHARE * free:
            raise MemoryError(
                f"frozen cache: {nbytes / 2**30:.2f} GiB ({rows} rows) do not fit in {device}'s "
                f"memory ({free / 2**30:.2f} GiB free) and its folder cannot be written (see the "
                "warning above): set cache_dir to a writable folder, or frozen_cache: false")
        parts = [first, *it]
        computed = [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]
        return Encoded(computed, None, True, sum(t.numel() * t.element_size()
                                                 for t in computed), True)
    path = folder / f"{stem}-{key[:24]}.feat"
    read, built = read_features(path, key), False
    if read is None:
        write_features(path, key, rows, batches())
        read, built = read_features(path, key), True
        if read is None:
            raise RuntimeError(f"{path}: written but unreadable")
    tensors = read
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    tensors, held = _held(tensors, device, resident)
    if not held:
        print(f"frozen cache: {nbytes / 2**30:.2f} GiB does not fit in {device}'s memory; "
              f"memory-mapped from {path}", flush=True)
    return Encoded(tensors, path, built, nbytes, held)


# -- a split --------------------------------------------------------------------------------
def distinct_texts(data: Triplets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(text_row (N, P), input_ids (U, L), attention_mask (U, L))``: the distinct token
    rows among every phrasing of every triplet, and each phrasing's row among them."""
    n, p, length = data.input_ids.shape
    ids = data.input_ids.reshape(n * p, length).long().cpu()
    attn = data.attention_mask.reshape(n * p, length).long().cpu()
    unique, inverse = torch.unique(torch.cat([ids, attn], dim=1), dim=0, return_inverse=True)
    return inverse.view(n, p), unique[:, :length], unique[:, length:]


@dataclass
class SplitFeatures:
    """A split's cached values: ``image`` per unique image (rows: ``Triplets.image_index``),
    ``text`` per distinct text (rows: ``text_row[triplet, phrasing]``), for inputs of side
    ``size``; gathered onto ``device`` (channels-last 4-D tensors when ``channels_last``)."""

    image: Encoded
    text: Encoded
    text_row: torch.Tensor
    size: int
    device: torch.device
    channels_last: bool

    def rows(self, data: Triplets, index: torch.Tensor,
             phrasing: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and text rows of triplets ``index`` with ``phrasing`` (as
        ``Triplets.batch`` takes them), on the data's device."""
        index = index.to(data.device)
        phr = torch.zeros_like(index) if phrasing is None else phrasing.to(data.device)[index]
        return data.image_index[index], self.text_row[index, phr]

    def gather(self, encoded: Encoded, rows: torch.Tensor) -> list[torch.Tensor]:
        """The cached tensors of ``rows`` on the training device."""
        if not encoded.resident:
            rows = rows.cpu()
        out = [t[rows].to(self.device, non_blocking=True) for t in encoded.tensors]
        return [g.contiguous(memory_format=torch.channels_last)
                if self.channels_last and g.ndim == 4 else g for g in out]

    def record(self) -> dict:
        return {"image": self.image.record(), "text": self.text.record()}


def _encode(fn: Callable[..., list[torch.Tensor]], device: torch.device, precision: str,
            *args: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad(), autocast(device, precision):
        return [t.detach() for t in fn(*args)]


def split_features(model: SegmentationModel, data: Triplets, *, precision: str,
                   channels_last: bool, batch_size: int, folder: Path | None,
                   weights: str | None = None, resident: bool | None = None,
                   progress: bool | None = None) -> SplitFeatures:
    """The cached values of one split (read, or computed now and written to ``folder``),
    computed by ``model`` in eval mode under ``precision``'s autocast, ``batch_size``
    images or texts at a time. ``resident``: hold them on the device (True), memory-map
    them (False) or decide by their size (None)."""
    device, spec = data.device, model.spec
    text_row, ids, attn = distinct_texts(data)
    base = {"format": FORMAT_VERSION, "class": type(model).__qualname__,
            "code": _code_digest(model), "spec": dataclasses.asdict(spec),
            "weights": weights or frozen_fingerprint(model), "precision": precision,
            "device": device.type, "channels_last": channels_last}
    n_images = int(data.images.shape[0])
    hide = None if progress is None else not progress
    dtype = next(model.parameters()).dtype  # float32 but in float64 checks

    def image_batches() -> Iterator[list[torch.Tensor]]:
        for chunk in tqdm(torch.split(torch.arange(n_images, device=device), batch_size),
                          desc="frozen cache: images", leave=False, disable=hide):
            x = normalise(data.images[chunk], spec.mean, spec.std, channels_last=channels_last,
                          dtype=dtype)
            yield _encode(model.encode_frozen_image, device, precision, x)

    def text_batches() -> Iterator[list[torch.Tensor]]:
        for chunk in torch.split(torch.arange(ids.shape[0]), batch_size):
            yield _encode(model.encode_frozen_text, device, precision, ids[chunk].to(device),
                          attn[chunk].to(device))

    stem = f"{spec.name}-{spec.size}"
    was_training = model.training
    model.eval()
    try:
        image = _encoded(folder, f"image-{stem}",
                         _digest({**base, "images": tensor_digest(data.images)}), n_images,
                         image_batches, device, resident)
        text = _encoded(folder, f"text-{stem}",
                        _digest({**base, "texts": tensor_digest(torch.cat([ids, attn], 1))}),
                        int(ids.shape[0]), text_batches, device, resident)
    finally:
        model.train(was_training)
    return SplitFeatures(image, text, text_row.to(device), data.image_size, device,
                         channels_last)


# -- a run ----------------------------------------------------------------------------------
@dataclass
class FrozenCache:
    """A run's cached values: its training and validation splits, and the seconds it took
    to read or compute them."""

    train: SplitFeatures
    val: SplitFeatures
    seconds: float

    def record(self) -> dict:
        """What ``summary.json`` records under ``frozen_cache``."""
        return {"used": True, "seconds": round(self.seconds, 3),
                "train": self.train.record(), "val": self.val.record()}


def cache_folder(config: TrainConfig) -> Path | None:
    """``<cache_dir or training dataset>/.cache/frozen``, created; None (values computed
    in memory, with a warning) where it cannot be written."""
    root = Path(config.cache_dir) if config.cache_dir else config.train_dir / ".cache"
    folder = root / "frozen"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        clean_temp_files(folder)  # what a killed build left (live writers' files kept)
    except OSError as exc:
        warnings.warn(f"{folder}: cannot write the frozen cache there ({exc.strerror}); "
                      "computing it in memory", CacheWarning, stacklevel=2)
        return None
    if not os.access(folder, os.W_OK):
        warnings.warn(f"{folder}: not writable; computing the frozen cache in memory",
                      CacheWarning, stacklevel=2)
        return None
    return folder


def prepare_cache(config: TrainConfig, model: SegmentationModel, data: TrainingData,
                  precision: str, progress: bool | None = None,
                  resident: bool | None = None) -> FrozenCache | None:
    """The run's cached values (``FrozenCache``), or None when the run trains without them
    (``cache_unavailable``). ``model`` carries the weights the run trains from."""
    if cache_unavailable(config, model) is not None or data.train is None:
        return None
    t0 = time.perf_counter()
    folder = cache_folder(config)
    weights = frozen_fingerprint(model)

    def one(split: Triplets) -> SplitFeatures:
        return split_features(model, split, precision=precision,
                              channels_last=config.channels_last,
                              batch_size=max(1, config.global_batch_size), folder=folder,
                              weights=weights, resident=resident, progress=progress)

    train = one(data.train)
    return FrozenCache(train, one(data.val), time.perf_counter() - t0)


def cache_record(config: TrainConfig, model: nn.Module, cache: FrozenCache | None) -> dict:
    """``summary.json``'s ``frozen_cache``: the cache's record, or why it was not used."""
    if cache is not None:
        return cache.record()
    return {"used": False, "reason": cache_unavailable(config, model) or "no training split"}


class CachedModel(nn.Module):
    """The model called on cached values: ``forward(image_rows, text_rows,
    attention_mask)`` gathers the rows of ``features`` and returns
    ``model.forward_encoded``'s logits ``(B, 1, S, S)``, equal to ``model``'s on the images
    and texts they came from. ``module`` is the model (``checkpoint.unwrap`` finds it)."""

    def __init__(self, model: SegmentationModel, features: SplitFeatures):
        super().__init__()
        self.module = model
        self.features = features

    def forward(self, image_rows: torch.Tensor, text_rows: torch.Tensor,
                attention_mask: torch.Tensor) -> torch.Tensor:
        f = self.features
        return self.module.forward_encoded(f.gather(f.image, image_rows),
                                           f.gather(f.text, text_rows), attention_mask, f.size)
