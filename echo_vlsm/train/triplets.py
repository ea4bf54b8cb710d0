"""Triplets (image, prompt, mask) of a task file, decoded once and held as uint8 tensors.

The study's input pipeline decoded, resized and normalised every PNG at every step in
DataLoader workers. Here a split is decoded, resized to the model's input size and tokenized
once, cached on disk (keyed by the files' sizes and modification times, the task file's
content and the settings), and then held as uint8 tensors - on the GPU when there is one.
Per step, a batch is gathered by index and normalised on the device (``normalise``).

Memory: images are stored once per image (the three structures of an image share it); the
masks of an image are packed as bits of one uint8 map (bit k = the k-th mask file of that
image), so a split costs two bytes per pixel and image. Both phrasings of a prompt are
tokenized up front, so drawing "a random phrasing per sample and epoch" (as the study did)
costs nothing.

Examples::

    data = load_triplets("data/phantom", "train", "p3", image_size=352,
                         tokenize=model.tokenize)
    images, masks, ids, attn = data.batch(torch.arange(8), data.draw_phrasings(generator))
    pixel_values = normalise(images, model.spec.mean, model.spec.std)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from echo_vlsm.dataset import task_path
from echo_vlsm.errors import PathError
from echo_vlsm.io import atomic_path, clean_temp_files
from echo_vlsm.prompts import prompt_candidates, read_tasks

CACHE_VERSION = 1
MAX_MASKS_PER_IMAGE = 8


class TripletError(PathError):
    """A task file or one of the files it names is missing or inconsistent."""


# -- task files and prompts -----------------------------------------------------------------
def task_file(dataset_dir: str | os.PathLike, split: str) -> Path:
    """``<dataset>/tasks/<split>.json``; a missing file is an error saying how to make it."""
    path = task_path(dataset_dir, split)
    if not path.is_file():
        have = sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        raise TripletError(
            path,
            f"no task file for split {split!r} (task files there: {have}); "
            "write them with notebook 03 / echo_vlsm.prompts.write_tasks",
        )
    return path


def _read_tasks(path: Path) -> list[dict]:
    """The task file, checked by ``echo_vlsm.prompts.read_tasks`` (errors name the file)."""
    tasks = read_tasks(path)
    if not tasks:
        raise TripletError(path, "holds no tasks (an empty list)")
    return tasks


def _prompt_texts(tasks: list[dict], prompt: str, path: Path,
                  provenance: str | None = None) -> list[list[str]]:
    """Per task, every text ``prompt`` gives (``echo_vlsm.prompts.prompt_candidates``, the
    rule ``pick_prompt`` draws from, with the ``provenance`` phrase); all of them are
    tokenized once."""
    try:
        return [prompt_candidates(t, prompt, provenance) for t in tasks]
    except ValueError as exc:
        raise TripletError(path, str(exc)) from exc


# -- the decoded split ----------------------------------------------------------------------
@dataclass
class Triplets(torch.utils.data.Dataset):
    """A decoded split: ``len()`` triplets over ``images.shape[0]`` unique images.

    Tensors (uint8 unless noted): ``images (I, S, S)``; ``masks (I, S, S)`` mask bits per image
    at the model's size; ``full_masks (I, H, W)`` the same at the stored size (for the final
    scores; kept on the CPU) or ``None``; per triplet ``image_index (N,)`` and ``mask_bit
    (N,)`` (int64), ``input_ids (N, P, L)`` (int64), ``attention_mask (N, P, L)``,
    ``n_phrasings (N,)`` (int64). ``samples``: per triplet a dict with ``sample`` (image stem),
    ``structure``, ``view``, ``phase``, ``img_name``, ``mask_name``; ``texts``: the phrasings.
    """

    images: torch.Tensor
    masks: torch.Tensor
    image_index: torch.Tensor
    mask_bit: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    n_phrasings: torch.Tensor
    samples: list[dict]
    texts: list[list[str]]
    full_masks: torch.Tensor | None = None
    source: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.image_index.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> Triplets:
        """Move the training tensors to ``device`` (``full_masks`` stay on the CPU)."""
        names = (
            "images",
            "masks",
            "image_index",
            "mask_bit",
            "input_ids",
            "attention_mask",
            "n_phrasings",
        )
        moved = {n: getattr(self, n).to(device) for n in names}
        return Triplets(
            **moved,
            samples=self.samples,
            texts=self.texts,
            full_masks=self.full_masks,
            source=self.source,
        )

    def draw_phrasings(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One phrasing index per triplet, uniformly among its phrasings (the study's random
        phrasing per sample); drawn on the CPU so that results do not depend on the device."""
        u = torch.rand(len(self), generator=generator)
        return (u * self.n_phrasings.cpu()).long().clamp_max(self.n_phrasings.cpu() - 1)

    def batch(self, index: torch.Tensor, phrasing: torch.Tensor | None = None):
        """Gather triplets ``index``: ``(images uint8 (B, S, S), masks bool (B, S, S),
        input_ids (B, L), attention_mask (B, L))`` on this set's device. Pass ``index`` and
        ``phrasing`` already on the device to keep the step free of host-to-device copies."""
        index = index.to(self.device)
        phr = torch.zeros_like(index) if phrasing is None else phrasing.to(self.device)[index]
        img = self.image_index[index]
        images = self.images[img]
        masks = ((self.masks[img] >> self.mask_bit[index].to(torch.uint8)[:, None, None]) & 1) > 0
        ids = self.input_ids[index, phr]
        attn = self.attention_mask[index, phr].long()
        return images, masks, ids, attn

    def full_mask(self, index: torch.Tensor) -> torch.Tensor:
        """Masks at the stored resolution, bool ``(B, H, W)``, on the CPU."""
        if self.full_masks is None:
            raise ValueError("this split was loaded without full_masks=True")
        index = index.cpu()
        img = self.image_index.cpu()[index]
        bit = self.mask_bit.cpu()[index].to(torch.uint8)
        return ((self.full_masks[img] >> bit[:, None, None]) & 1) > 0

    def select_images(self, images: torch.Tensor) -> Triplets:
        """The triplets of the unique images ``images`` (indices into ``self.images``, kept in
        that order), with all their structures; images stay stored once."""
        images = torch.as_tensor(images, dtype=torch.long).cpu()
        new_of_old = torch.full((int(self.images.shape[0]),), -1, dtype=torch.long)
        new_of_old[images] = torch.arange(len(images))
        mapped = new_of_old[self.image_index.cpu()]
        keep = torch.nonzero(mapped >= 0).view(-1)
        dev = self.device
        k = keep.tolist()
        images_dev, keep_dev = images.to(dev), keep.to(dev)
        return Triplets(
            images=self.images[images_dev], masks=self.masks[images_dev],
            image_index=mapped[keep].to(dev), mask_bit=self.mask_bit[keep_dev],
            input_ids=self.input_ids[keep_dev], attention_mask=self.attention_mask[keep_dev],
            n_phrasings=self.n_phrasings[keep_dev],
            samples=[self.samples[i] for i in k], texts=[self.texts[i] for i in k],
            full_masks=None if self.full_masks is None else self.full_masks[images],
            source=dict(self.source),
        )

    def prompt_text(self, i: int, phrasing: torch.Tensor | None = None) -> str:
        j = 0 if phrasing is None else int(phrasing[i])
        return self.texts[i][j]

    def __getitem__(self, i: int) -> dict:
        images, masks, ids, attn = self.batch(torch.tensor([i]))
        return {
            "image": images[0],
            "mask": masks[0],
            "input_ids": ids[0],
            "attention_mask": attn[0],
            **self.samples[i],
        }


def concat_triplets(parts: Sequence[Triplets]) -> Triplets:
    """One training set of several (the ``mixed`` strategy's real and synthetic triplets):
    images stored once each, masks still bit-packed per image, the phrasings of every triplet
    padded to the same count by repeating its last one (draws are uniform over its own
    ``n_phrasings``). ``source`` lists the parts'."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    sizes = {p.image_size for p in parts}
    lengths = {int(p.input_ids.shape[-1]) for p in parts}
    if len(sizes) != 1 or len(lengths) != 1:
        raise ValueError(f"concat_triplets: parts of image sizes {sorted(sizes)} and token "
                         f"lengths {sorted(lengths)}; they must be decoded for one model")
    dev = parts[0].device
    width = max(int(p.input_ids.shape[1]) for p in parts)

    def padded(t: torch.Tensor) -> torch.Tensor:
        extra = width - int(t.shape[1])
        return t if extra == 0 else torch.cat([t, t[:, -1:].expand(-1, extra, -1)], dim=1)

    offsets, total = [], 0
    for p in parts:
        offsets.append(total)
        total += int(p.images.shape[0])
    full = [p.full_masks for p in parts]
    return Triplets(
        images=torch.cat([p.images.to(dev) for p in parts]),
        masks=torch.cat([p.masks.to(dev) for p in parts]),
        image_index=torch.cat([p.image_index.to(dev) + o for p, o in zip(parts, offsets)]),
        mask_bit=torch.cat([p.mask_bit.to(dev) for p in parts]),
        input_ids=torch.cat([padded(p.input_ids.to(dev)) for p in parts]),
        attention_mask=torch.cat([padded(p.attention_mask.to(dev)) for p in parts]),
        n_phrasings=torch.cat([p.n_phrasings.to(dev) for p in parts]),
        samples=[s for p in parts for s in p.samples],
        texts=[t for p in parts for t in p.texts],
        full_masks=torch.cat(full) if all(f is not None for f in full) else None,
        source={"parts": [p.source for p in parts]},
    )


def normalise(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(B, S, S)`` gray images -> float ``(B, 3, S, S)`` normalised with ``mean`` and
    ``std`` of ``[0, 1]`` images (gray repeated over the three channels), on their device."""
    scale, shift = _norm_constants(images.device, tuple(mean), tuple(std))
    x = torch.addcmul(shift, images[:, None].to(torch.float32), scale)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(dtype)


@functools.lru_cache(maxsize=16)
def _norm_constants(device: torch.device, mean: tuple, std: tuple):
    """Per-channel scale and shift on ``device``, made once (a host-to-device copy per step
    would synchronise the GPU)."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (1.0 / (255.0 * std_t)).to(device), (-mean_t / std_t).to(device)


# -- decoding and caching -------------------------------------------------------------------
def _imread(path: Path) -> np.ndarray:
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


def _resize(array: np.ndarray, size: int, mask: bool) -> np.ndarray:
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


def _decode_split(
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
        image = _imread(img_path)
        images[i] = torch.from_numpy(_resize(image, size, mask=False))
        packed_full = np.zeros(image.shape, np.uint8) if full else None
        for bit, mask_name in enumerate(masks_of[i]):
            mask_path = root / mask_name
            m = _imread(mask_path)
            if m.shape != image.shape:
                raise TripletError(
                    mask_path,
                    f"mask is {m.shape[1]}x{m.shape[0]} but its image "
                    f"{img_path} is {image.shape[1]}x{image.shape[0]}; masks must "
                    "have their image's size",
                )
            binary = (m > 127).astype(np.uint8) if m.max() > 1 else (m > 0).astype(np.uint8)
            masks[i] |= torch.from_numpy(_resize(binary, size, mask=True) << bit)
            if full:
                packed_full |= binary << bit
        if full:
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
        shapes = {a.shape for a in full_masks}
        if len(shapes) != 1:
            raise TripletError(
                root,
                f"images of this split have different sizes {sorted(shapes)}; "
                "an exported dataset has one size (export_dataset(size=512))",
            )
        full_t = torch.from_numpy(np.stack(full_masks))
    return images, masks, full_t


def load_triplets(
    dataset_dir: str | os.PathLike,
    split: str,
    prompt: str,
    image_size: int,
    tokenize: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    cache_dir: str | os.PathLike | None = None,
    full_masks: bool = False,
    device: str | torch.device | None = None,
    workers: int | None = None,
    progress: bool = True,
    provenance: str | None = None,
) -> Triplets:
    """Read ``<dataset>/tasks/<split>.json`` and decode its triplets for a model.

    Args:
        dataset_dir: an exported dataset (``images/``, ``masks/``, ``tasks/``).
        split: ``train``, ``val`` or ``test``.
        prompt: ``p0``..``p7``, ``random``, or a free text (``prompt_candidates``).
        image_size: the model's square input side (``model.spec.image_size``).
        tokenize: ``model.tokenize`` (texts -> ``(input_ids, attention_mask)``).
        cache_dir: where the decoded tensors are cached (default ``<dataset>/.cache``);
            ``False`` disables the cache.
        full_masks: also keep the masks at their stored size (for the final scores).
        device: move the training tensors there (``None``: stay on the CPU).
        workers: decoding threads (default: up to 8).
        provenance: ``real`` | ``synthetic``: each text says where its image comes from
            (``echo_vlsm.prompts.with_provenance``; beyond the study); ``None``: the texts
            as the task file gives them.

    Raises:
        TripletError: (naming the file) a missing task file, a file it names that is missing
            or unreadable, a mask whose size differs from its image's, an unknown prompt key.
    """
    root = Path(dataset_dir)
    path = task_file(root, split)
    tasks = _read_tasks(path)
    texts = _prompt_texts(tasks, prompt, path, provenance)
    index = _index_tasks(tasks, path)
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir else root / ".cache"
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only dataset folder
            clean_temp_files(cache)  # what a killed run left mid-write (live writers kept)
    pix = _load_pixels(root, split, index, image_size, full_masks, cache,
                       workers or min(8, os.cpu_count() or 1), progress)
    tok = _load_tokens(split, prompt, texts, tokenize, cache)
    data = Triplets(
        images=pix["images"],
        masks=pix["masks"],
        image_index=torch.tensor(index.image_index, dtype=torch.long),
        mask_bit=torch.tensor(index.mask_bit, dtype=torch.long),
        input_ids=tok["input_ids"].long(),
        attention_mask=tok["attention_mask"],
        n_phrasings=tok["n_phrasings"],
        samples=index.samples,
        texts=texts,
        full_masks=pix["full_masks"] if full_masks else None,
        source={"dataset": str(root), "split": split, "prompt": prompt, "task_file": str(path),
                "provenance": provenance},
    )
    return data.to(device) if device is not None else data


@dataclass
class _TaskIndex:
    """The unique images of a task file, the distinct mask files of each (one bit each), and
    per task its image, its mask's bit and its sample description."""

    image_names: list[str] = field(default_factory=list)
    masks_of: list[list[str]] = field(default_factory=list)
    image_index: list[int] = field(default_factory=list)
    mask_bit: list[int] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


def _index_tasks(tasks: list[dict], path: Path) -> _TaskIndex:
    index = _TaskIndex()
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


def _load_pixels(root: Path, split: str, index: _TaskIndex, size: int, full: bool,
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
        images, masks, full_t = _decode_split(root, index.image_names, index.masks_of, size,
                                              full, workers, progress,
                                              f"decoding {root.name}/{split}")
        pix = {"images": images, "masks": masks, "full_masks": full_t}
        _cache_save(cache, name, pix)
    return pix


def _load_tokens(split: str, prompt: str, texts: list[list[str]], tokenize,
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


def _tokenize_all(texts: list[list[str]], tokenize) -> dict:
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
    if cache is None or not (cache / name).is_file():
        return None
    try:
        return torch.load(cache / name, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache file is rebuilt
        return None


def _cache_save(cache: Path | None, name: str, obj: dict) -> None:
    if cache is None:
        return
    try:
        with atomic_path(cache / name) as tmp:
            torch.save(obj, tmp)
    except OSError:  # a read-only dataset folder: work without the cache
        pass
