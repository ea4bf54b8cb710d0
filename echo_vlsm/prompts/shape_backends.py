"""The shape word of a mask by one of two backends: geometry (default) or a VQA model.

The shape word goes into prompt P7 (P6 of synthetic images). ``geometry`` measures the
mask's contour (``echo_vlsm.prompts.shape``, deterministic); ``vqa`` asks a
visual-question-answering model the study's question (``echo_vlsm.prompts.vqa``). This
module sits above both, so neither imports the other's caller.

Examples::

    >>> import cv2, numpy as np
    >>> box = cv2.rectangle(np.zeros((64, 64), np.uint8), (10, 20), (54, 40), 255, -1)
    >>> shape_of(box)
    'rectangle'
    >>> BACKENDS
    ('geometry', 'vqa')
"""

from __future__ import annotations

import os

from echo_vlsm.prompts import vqa
from echo_vlsm.prompts.shape import geometric_shape

BACKENDS: tuple[str, ...] = ("geometry", "vqa")


def check_backend(backend: str, name: str = "shape backend") -> str:
    """``backend`` if it is one of ``BACKENDS``, else a ValueError naming ``name``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown {name} {backend!r}; expected one of {list(BACKENDS)}")
    return backend


def shape_of(
    mask,
    backend: str = "geometry",
    *,
    model: str | os.PathLike | None = None,
    structure: str | None = None,
    image=None,
    cache_dir: str | os.PathLike | bool | None = None,
    unmatched: str = "keep",
    device: str | None = None,
) -> str:
    """The shape word of a structure's mask (prompt P7; P6 of synthetic images).

    Args:
        mask: (H, W) boolean or numeric mask; the structure is ``mask > 0``.
        backend: the choice ``write_tasks``/``build_tasks`` and notebook 03 call
            ``shape_backend``. ``"geometry"`` (default): one of ``SHAPES`` from contour
            measures (the outer outline for ``structure="myo"``; ``echo_vlsm.prompts.shape``).
            ``"vqa"``: ask ``model`` (hub id or local folder) the study's question about
            ``structure`` with the mask's bounding box drawn in green on ``image``; the answer
            is mapped to one of ``SHAPES`` (synonyms such as "round" included).
        unmatched: an answer naming no shape is kept (``"keep"``, lower-cased, as the study
            did), replaced by the geometric word (``"geometry"``), or raises (``"error"``).
        cache_dir: VQA answers are cached per (model, question, image, mask) there (default
            ``~/.cache/echo-vlsm/vqa``; ``False`` disables it).

    Raises:
        ValueError: an unknown backend, an empty or non-2-D mask, a missing argument of the
            VQA backend.
    """
    check_backend(backend)
    if backend == "geometry":
        return geometric_shape(mask, structure)
    return vqa.vqa_shape(
        mask, image=image, structure=structure, model=model, cache_dir=cache_dir,
        unmatched=unmatched, device=device,
    )
