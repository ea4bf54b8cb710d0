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
costs nothing. The token columns that are padding in every phrasing of the split are dropped
(``trim_padding``): the text encoders then run on the split's longest prompt rather than on
CLIP's 77-token context (the outputs are the same to float rounding: attention is causal
and padding is masked).

Examples::

    data = load_triplets("data/phantom", "train", "p3", image_size=352,
                         tokenize=model.tokenize)
    images, masks, ids, attn = data.batch(torch.arange(8), data.draw_phrasings(generator))
    pixel_values = normalise(images, model.spec.mean, model.spec.std)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from echo_vlsm.dataset import task_path
from echo_vlsm.prompts import prompt_candidates, read_tasks
from echo_vlsm.train.decoding import (
    Tokenize,
    TripletError,
    index_tasks,
    load_pixels,
    load_tokens,
    prepare_cache,
)


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


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` without their trailing token columns that are padding
    in every row (mask 0), the last dimension being the tokens. CLIP's text encoders attend
    causally, so a token never sees the columns after it, and CRIS's decoder masks padded
    words: dropping such columns changes nothing but the cost (a 77-token context holds a P1
    prompt in about 10).

    >>> ids = torch.tensor([[49406, 320, 49407, 0, 0], [49406, 49407, 0, 0, 0]])
    >>> [t.tolist() for t in trim_padding(ids, (ids > 0).long())]
    [[[49406, 320, 49407], [49406, 49407, 0]], [[1, 1, 1], [1, 1, 0]]]
    """
    if attention_mask.numel() == 0:
        return input_ids, attention_mask
    used = (attention_mask.reshape(-1, attention_mask.shape[-1]) != 0).any(0)
    width = int(torch.nonzero(used).max()) + 1 if bool(used.any()) else 1
    return input_ids[..., :width].contiguous(), attention_mask[..., :width].contiguous()


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
    if len(sizes) != 1:
        raise ValueError(f"concat_triplets: parts of image sizes {sorted(sizes)}; they must "
                         "be decoded for one model")
    dev = parts[0].device
    width = max(int(p.input_ids.shape[1]) for p in parts)
    tokens = max(int(p.input_ids.shape[2]) for p in parts)  # trimmed per split: pad to one

    def padded(t: torch.Tensor) -> torch.Tensor:
        t = torch.nn.functional.pad(t, (0, tokens - int(t.shape[2])))  # padding: id 0, mask 0
        extra = width - int(t.shape[1])
        return t if extra == 0 else torch.cat([t, t[:, -1:].expand(-1, extra, -1)], dim=1)

    offsets, total = [], 0
    for p in parts:
        offsets.append(total)
        total += int(p.images.shape[0])
    full = [p.full_masks for p in parts if p.full_masks is not None]
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
        full_masks=torch.cat(full) if len(full) == len(parts) else None,
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


def load_triplets(
    dataset_dir: str | os.PathLike,
    split: str,
    prompt: str,
    image_size: int,
    tokenize: Tokenize,
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
    index = index_tasks(tasks, path)
    cache = None if cache_dir is False else Path(cache_dir) if cache_dir else root / ".cache"
    prepare_cache(cache)  # what killed writers left mid-write (live ones, any host's, kept)
    pix = load_pixels(root, split, index, image_size, full_masks, cache,
                       workers or min(8, os.cpu_count() or 1), progress)
    tok = load_tokens(split, prompt, texts, tokenize, cache)
    input_ids, attention_mask = trim_padding(tok["input_ids"], tok["attention_mask"])
    data = Triplets(
        images=pix["images"],
        masks=pix["masks"],
        image_index=torch.tensor(index.image_index, dtype=torch.long),
        mask_bit=torch.tensor(index.mask_bit, dtype=torch.long),
        input_ids=input_ids.long(),
        attention_mask=attention_mask,
        n_phrasings=tok["n_phrasings"],
        samples=index.samples,
        texts=texts,
        full_masks=pix["full_masks"] if full_masks else None,
        source={"dataset": str(root), "split": split, "prompt": prompt, "task_file": str(path),
                "provenance": provenance},
    )
    return data.to(device) if device is not None else data
