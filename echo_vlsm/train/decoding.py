"""Decoding a split's files once and caching the result: images and masks read from PNG
(``read_image``), resized to the model's input size (``resize``), masks packed as bits of
one uint8 map per image, the phrasings tokenized; both cached on disk under keys of the
files' names, sizes and modification times, the size, the texts and the tokenizer
(``load_pixels``, ``load_tokens``). ``echo_vlsm.train.triplets.load_triplets`` builds a
``Triplets`` from them.

The cache folder may be shared by processes on several hosts: each writes through its own
temporary file (``echo_vlsm.io.atomic_path``: host and pid in its name) renamed in place, and
``prepare_cache`` removes only temporary files whose writer is known dead (or that are a day
old), so a writer never loses its file to another's cleaning. A folder this user cannot write
is skipped with one ``CacheWarning`` naming it; no other error is swallowed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from echo_vlsm.errors import PathError
from echo_vlsm.io import DiskFullError, atomic_path, clean_temp_files

__all__ = ["CACHE_VERSION", "MAX_MASKS_PER_IMAGE", "CacheWarning", "TaskIndex", "TripletError",
           "index_tasks", "load_pixels", "load_tokens", "prepare_cache", "read_image", "resize"]

CACHE_VERSION = 1
MAX_MASKS_PER_IMAGE = 8
#: ``tokenize``: texts -> ``(input_ids, attention_mask)`` (``model.tokenize``).
Tokenize = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


class TripletError(PathError):
    """A task file or one of the files it names is missing or inconsistent."""


def read_image(path: Path) -> np.ndarray:
    """An 8-bit PNG as a grey uint8 array (colour converted to grey).

    Raises:
        TripletError: (naming the file) missing, not decodable, or not 8-bit.
    """
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise TripletError(path, "file named in the task file does not exist")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise TripletError(path, "cannot decode the image (expected an 8-bit PNG)")
    if array.ndim == 3:
        array = cv2.cvtColor(
            array, cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        )
    if array.dtype != np.uint8:
        raise TripletError(path, f"expected an 8-bit image, got {array.dtype}")
    return array


def resize(array: np.ndarray, size: int, mask: bool) -> np.ndarray:
    """``array`` resized to ``size`` x ``size``: masks nearest-neighbour, images by area
    averaging when shrinking and bilinearly when enlarging."""
    # Not echo_vlsm.imaging: masks here are resized with INTER_NEAREST (not _EXACT) and images
    # with one interpolation chosen by the longer side, so switching would change cached pixels.
    if array.shape == (size, size):
        return array
    if mask:
        interp = cv2.INTER_NEAREST
    else:  # area averaging when shrinking (no aliasing), bilinear when enlarging
        interp = cv2.INTER_AREA if max(array.shape) > size else cv2.INTER_LINEAR
    return cv2.resize(array, (size, size), interpolation=interp)


def _stat_key(path: Path) -> list:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise TripletError(path, "file named in the task file does not exist") from None
    return [path.name, st.st_size, st.st_mtime_ns]


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def decode_split(
    root: Path,
    image_names: list[str],
    masks_of: list[list[str]],
    size: int,
    full: bool,
    workers: int,
    progress: bool,
    desc: str,
):
    n = len(image_names)
    images = torch.empty((n, size, size), dtype=torch.uint8)
    masks = torch.zeros((n, size, size), dtype=torch.uint8)
    full_masks: list[np.ndarray | None] = [None] * n

    def work(i: int):
        img_path = root / image_names[i]
        image = read_image(img_path)
        images[i] = torch.from_numpy(resize(image, size, mask=False))
        packed_full = np.zeros(image.shape, np.uint8) if full else None
        for bit, mask_name in enumerate(masks_of[i]):
            mask_path = root / mask_name
            m = read_image(mask_path)
            if m.shape != image.shape:
                raise TripletError(
                    mask_path,
                    f"mask is {m.shape[1]}x{m.shape[0]} but its image "
                    f"{img_path} is {image.shape[1]}x{image.shape[0]}; masks must "
                    "have their image's size",
                )
            binary = (m > 127).astype(np.uint8) if m.max() > 1 else (m > 0).astype(np.uint8)
            masks[i] |= torch.from_numpy(resize(binary, size, mask=True) << bit)
            if packed_full is not None:  # full
                packed_full |= binary << bit
        if packed_full is not None:
            full_masks[i] = packed_full

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(
            tqdm(
                pool.map(work, range(n)),
                total=n,
                desc=desc,
                disable=None if progress else True,
                leave=False,
            )
        )
    full_t = None
    if full:
        filled = [a for a in full_masks if a is not None]  # all of them: work() fills each
        shapes = {a.shape for a in filled}
        if len(shapes) != 1:
            raise TripletError(
                root,
                f"images of this split have different sizes {sorted(shapes)}; "
                "an exported dataset has one size (export_dataset(size=512))",
            )
        full_t = torch.from_numpy(np.stack(filled))
    return images, masks, full_t


@dataclass
class TaskIndex:
    """The unique images of a task file, the distinct mask files of each (one bit each), and
    per task its image, its mask's bit and its sample description."""

    image_names: list[str] = field(default_factory=list)
    masks_of: list[list[str]] = field(default_factory=list)
    image_index: list[int] = field(default_factory=list)
    mask_bit: list[int] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


def index_tasks(tasks: list[dict], path: Path) -> TaskIndex:
    index = TaskIndex()
    position: dict[str, int] = {}
    for task in tasks:
        img, msk = str(task["img_name"]), str(task["mask_name"])
        if img not in position:
            position[img] = len(index.image_names)
            index.image_names.append(img)
            index.masks_of.append([])
        i = position[img]
        masks = index.masks_of[i]
        if msk not in masks:
            if len(masks) == MAX_MASKS_PER_IMAGE:
                raise TripletError(
                    path, f"image {img!r} has more than {MAX_MASKS_PER_IMAGE} mask files"
                )
            masks.append(msk)
        index.image_index.append(i)
        index.mask_bit.append(masks.index(msk))
        index.samples.append(_sample(task, img, msk))
    return index


def _sample(task: dict, img: str, msk: str) -> dict:
    """What the tidy metrics say about a triplet: its image stem, structure, view, phase."""
    attrs = task.get("attributes") or {}
    return {
        "sample": str(attrs.get("stem") or Path(img).stem),
        "structure": str(task.get("structure") or attrs.get("structure") or ""),
        "view": str(attrs.get("view") or ""),
        "phase": str(attrs.get("phase") or ""),
        "img_name": img,
        "mask_name": msk,
    }


def load_pixels(root: Path, split: str, index: TaskIndex, size: int, full: bool,
                 cache: Path | None, workers: int, progress: bool) -> dict:
    """The decoded images and packed masks, from the cache when the files (names, sizes,
    modification times) and the size are those it was made from."""
    key = _digest([
        CACHE_VERSION,
        split,
        size,
        [_stat_key(root / n) for n in index.image_names],
        [[_stat_key(root / m) for m in ms] for ms in index.masks_of],
    ])
    name = f"pixels-{split}-{size}-{key}.pt"
    pix = _cache_load(cache, name)
    if pix is None or (full and pix.get("full_masks") is None):
        images, masks, full_t = decode_split(root, index.image_names, index.masks_of, size,
                                              full, workers, progress,
                                              f"decoding {root.name}/{split}")
        pix = {"images": images, "masks": masks, "full_masks": full_t}
        _cache_save(cache, name, pix)
    return pix


def load_tokens(split: str, prompt: str, texts: list[list[str]], tokenize: Tokenize,
                 cache: Path | None) -> dict:
    """The tokenized phrasings, from the cache when the texts and the tokenizer (probed with
    one sentence) are those it was made from."""
    probe_ids, probe_mask = tokenize(["Left ventricular cavity of the heart."])
    tok_key = _digest([probe_ids.tolist(), probe_mask.tolist(), list(probe_ids.shape)])
    name = f"tokens-{split}-{prompt}-{_digest([CACHE_VERSION, tok_key, texts])}.pt"
    tok = _cache_load(cache, name)
    if tok is None:
        tok = _tokenize_all(texts, tokenize)
        _cache_save(cache, name, tok)
    return tok


def _tokenize_all(texts: list[list[str]], tokenize: Tokenize) -> dict:
    unique = sorted({t for phr in texts for t in phr})
    ids, attn = tokenize(unique) if unique else (torch.zeros(0, 1), torch.zeros(0, 1))
    row = {t: i for i, t in enumerate(unique)}
    p = max(len(phr) for phr in texts)
    n = len(texts)
    index = torch.tensor([[row[phr[min(j, len(phr) - 1)]] for j in range(p)] for phr in texts])
    return {
        "input_ids": ids[index.view(-1)].view(n, p, -1).to(torch.int32),
        "attention_mask": attn[index.view(-1)].view(n, p, -1).to(torch.uint8),
        "n_phrasings": torch.tensor([len(phr) for phr in texts], dtype=torch.long),
    }


def _cache_load(cache: Path | None, name: str) -> dict | None:
    """A cached dict, or None when there is none; a damaged one is rebuilt, with a warning
    naming it (every cache file is written atomically: damage came from elsewhere)."""
    if cache is None or not (cache / name).is_file():
        return None
    try:
        return torch.load(cache / name, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        warnings.warn(f"{cache / name}: unreadable cache file ({type(exc).__name__}); decoding "
                      "again and replacing it", CacheWarning, stacklevel=3)
        return None


class CacheWarning(UserWarning):
    """The decoded-data cache is skipped or rebuilt (the message names the folder or file)."""


#: Cache folders already reported as unwritable by this process (one warning each).
_UNWRITABLE: set[Path] = set()
#: The errors that make a cache folder unwritable for this user: work without the cache.
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def _cache_unwritable(cache: Path, exc: OSError) -> None:
    """Say once per folder that the cache there is skipped, and why."""
    if cache in _UNWRITABLE:
        return
    _UNWRITABLE.add(cache)
    warnings.warn(f"{cache}: cannot write the decoded-data cache there ({exc.strerror or exc}); "
                  "decoding without it (pass cache_dir= a writable folder to keep it)",
                  CacheWarning, stacklevel=4)


def prepare_cache(cache: Path | None) -> None:
    """Remove the temporary files that killed writers left in the cache folder
    (``echo_vlsm.io.clean_temp_files``: a live writer's, or another host's younger than a
    day, stay); a folder this user cannot change is reported once (``CacheWarning``)."""
    if cache is None:
        return
    try:
        clean_temp_files(cache)
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        _cache_unwritable(cache, exc)


def _cache_save(cache: Path | None, name: str, obj: dict) -> None:
    """Write a cache file atomically (a per-writer temporary name carrying this host and pid,
    renamed in place: writers of several processes or hosts never see each other's halves).
    A folder this user cannot write (read-only, no permission) is skipped with one
    ``CacheWarning``; a full disk raises ``echo_vlsm.io.DiskFullError`` naming the file; any
    other error is raised."""
    if cache is None or cache in _UNWRITABLE:
        return
    try:
        with atomic_path(cache / name) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as exc:
        if isinstance(exc, DiskFullError) or exc.errno not in _READ_ONLY:
            raise
        _cache_unwritable(cache, exc)
