"""Reading the CAMUS echocardiography dataset (2019 .mhd and 2023 .nii.gz releases).

CONTRACT (fixed by the foundation; the reader's implementation fills in the functions):

- ``CamusRecord``: one (patient, view, phase) of a tree, metadata read eagerly, pixels lazily.
- ``read_camus(root, splits=None) -> list[CamusRecord]`` sorted by (patient, view, phase).
- ``validate(root) -> list[str]``: every problem in the tree, each naming its file.
- ``CamusFormatError``: raised on bad input, with the file and the problem in its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CamusFormatError(ValueError):
    """A CAMUS file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class CamusRecord:
    """One image of CAMUS: a patient's apical view at end-diastole or end-systole.

    ``image_path``/``label_path`` point at the ``.mhd``, ``.nii.gz`` or ``.nii`` files;
    ``load()`` returns ``(image, label)``, both (H, W) uint8, label values in 0..3,
    checked for equal shape and spacing.
    """

    patient: str  # "patient0001"
    view: str  # "2CH" | "4CH"
    phase: str  # "ED" | "ES"
    split: str  # "train" | "val" | "test"
    image_path: Path
    label_path: Path
    spacing: tuple[float, float]  # (row, column) pixel size in mm
    sex: str | None  # "M" | "F"
    age: int | None
    quality: str | None  # "Good" | "Medium" | "Poor"
    release: str = "2023"  # "2019" | "2023"

    @property
    def stem(self) -> str:
        return f"{self.patient}_{self.view}_{self.phase}"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("filled in by the CAMUS reader")
