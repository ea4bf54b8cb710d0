"""Clinical indices from LV masks: volumes (method of discs) and ejection fraction (floor 1).

numpy, scipy and scikit-image only, so that the phantom, the evaluation and the analysis can
all use it. ``docs/clinical.md`` describes the method, its two disc-height rules, the
post-processing, the reasons a mask gives no number, and the exactness measured.

- ``biplane_volumes(ed_2ch, es_2ch, ed_4ch, es_4ch, spacing_2ch, spacing_4ch)``
- ``single_plane_volumes(ed, es, spacing)``
- ``disc_diameters(mask, spacing)``: one view's 20 diameters and long axis
- ``clean_mask(mask)``: the one post-processing (largest component, holes filled)
"""

from echo_vlsm.clinical.discs import (
    BORDER,
    CHORD_TOLERANCE_MM,
    EMPTY,
    MIN_AREA_MM2,
    MIN_CHORD_MM,
    N_DISCS,
    NO_CHORD,
    TINY,
    ViewMeasurement,
    disc_diameters,
)
from echo_vlsm.clinical.masks import clean_mask
from echo_vlsm.clinical.volumes import (
    DISC_HEIGHTS,
    Volumes,
    biplane_volumes,
    single_plane_volumes,
)

__all__ = [
    "BORDER", "CHORD_TOLERANCE_MM", "DISC_HEIGHTS", "EMPTY", "MIN_AREA_MM2", "MIN_CHORD_MM",
    "NO_CHORD", "N_DISCS", "TINY", "ViewMeasurement", "Volumes", "biplane_volumes",
    "clean_mask", "disc_diameters", "single_plane_volumes",
]
