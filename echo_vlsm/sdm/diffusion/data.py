"""The SDM's training data: every image of an exported dataset with its 5-class map.

The map comes from the label map and the ultrasound sector found in the image
(``labels.to_sdm_map``); both are shrunk to the SDM's size, by area for the image and by
majority class for the map. The view/phase index feeds the optional conditioning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from echo_vlsm.dataset import image_path, label_path, read_records
from echo_vlsm.errors import PathError
from echo_vlsm.imaging import resize_image
from echo_vlsm.io import read_png
from echo_vlsm.sdm.diffusion.config import NULL_VIEW_PHASE, VIEW_PHASE
from echo_vlsm.sdm.labels import resize_map, sector_mask, to_sdm_map


@dataclass
class TrainingData:
    """Images (N, S, S) uint8, 5-class maps (N, S, S) uint8, view/phase index (N,), stems."""

    images: torch.Tensor
    maps: torch.Tensor
    view_phase: torch.Tensor
    stems: list[str]


def load_training_data(dataset_dir: str | os.PathLike, image_size: int,
                       splits: Sequence[str] = ("train",),
                       progress: bool = True) -> TrainingData:
    """Read an exported dataset's images of ``splits`` with their SDM maps at ``image_size``.

    Raises:
        ValueError: no image in ``splits``, or a label map whose shape is not its image's.
    """
    rows = read_records(dataset_dir)
    rows = rows[rows["split"].isin(list(splits))]
    if rows.empty:
        raise ValueError(f"{dataset_dir}/records.csv: no images in the splits {list(splits)}")
    images, maps, vps, stems = [], [], [], []
    for row in tqdm(list(rows.itertuples()), desc="load", unit="img",
                    disable=None if progress else True):
        img = read_png(image_path(dataset_dir, row.split, row.stem))
        lbl_file = label_path(dataset_dir, row.split, row.stem)
        lbl = read_png(lbl_file)
        if img.shape != lbl.shape:
            raise PathError(lbl_file, f"shape {lbl.shape} differs from its image's {img.shape}")
        sdm_map = to_sdm_map(lbl, sector_mask(img))
        images.append(resize_image(img, image_size))
        maps.append(resize_map(sdm_map, image_size))
        vps.append(VIEW_PHASE.get((row.view, row.phase), NULL_VIEW_PHASE))
        stems.append(row.stem)
    return TrainingData(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(maps)),
                        torch.tensor(vps, dtype=torch.long), stems)
