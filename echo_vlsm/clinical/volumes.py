"""LV volumes and ejection fraction by the method of discs (Simpson), biplane or single-plane.

V = pi/4 * h * sum_i(a_i * b_i) over 20 discs, a_i from the apical 2-chamber view and b_i
from the 4-chamber view (single plane: a_i = b_i), EF = 100 * (EDV - ESV) / EDV.

Disc height h, two rules:

- ``"camus"`` (default): the largest L/20 of the masks given (four for biplane, two for
  single plane), used for both instants, as CAMUS's published evaluation script computes it.
  Each mask's diameters are still sampled along its own long axis, so the shorter ES volume
  is scaled up by L_max / L_ES: results compare like for like with that script.
- ``"textbook"``: each instant its own longer long axis, h = max(L_2CH, L_4CH) / 20 (single
  plane: L / 20).

A mask that cannot be measured (``disc_diameters``) makes the values that depend on it NaN,
and ``reason`` names the view and why; under ``"camus"`` every value depends on all masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from echo_vlsm.clinical.discs import N_DISCS, ViewMeasurement, disc_diameters

DiscHeight = Literal["camus", "textbook"]
DISC_HEIGHTS: tuple[str, ...] = ("camus", "textbook")


@dataclass(frozen=True)
class Volumes:
    """EDV and ESV (mL), EF (%) of one patient, with the geometry they came from.

    ``views`` holds one ``ViewMeasurement`` per mask in ``names`` order (biplane:
    2CH_ED, 2CH_ES, 4CH_ED, 4CH_ES; single plane: ED, ES). A NaN value always comes with a
    ``reason``; ``reason`` is None when all three values are numbers.
    """

    edv_ml: float
    esv_ml: float
    ef_percent: float
    reason: str | None
    disc_height: str  # the rule: "camus" or "textbook"
    disc_height_ed_mm: float
    disc_height_es_mm: float
    names: tuple[str, ...]
    views: tuple[ViewMeasurement, ...]

    @property
    def long_axes_mm(self) -> dict[str, float]:
        """Long axis of each mask, by name."""
        return {n: v.long_axis_mm for n, v in zip(self.names, self.views, strict=True)}


def _volume_ml(a: ViewMeasurement, b: ViewMeasurement, height_mm: float) -> float:
    prod = np.asarray(a.diameters_mm) * np.asarray(b.diameters_mm)
    return float(math.pi / 4 * height_mm * prod.sum() / 1000.0)


def _ejection_fraction(edv: float, esv: float) -> float:
    if not (math.isfinite(edv) and math.isfinite(esv)) or edv <= 0:
        return float("nan")
    return 100.0 * (edv - esv) / edv


def _combine(names: tuple[str, ...], views: tuple[ViewMeasurement, ...],
             ed_pair: tuple[int, int], es_pair: tuple[int, int],
             disc_height: str) -> Volumes:
    """Volumes from measured views; ``*_pair`` index the (a, b) views of each instant."""
    if disc_height not in DISC_HEIGHTS:
        raise ValueError(f"disc_height: expected one of {DISC_HEIGHTS}, got {disc_height!r}")
    failures = [f"{n}: {v.reason}" for n, v in zip(names, views, strict=True) if not v.ok]
    reason = "; ".join(failures) if failures else None
    nan = float("nan")
    axes = [v.long_axis_mm for v in views]
    if disc_height == "camus":
        h = max(axes) / N_DISCS if not failures else nan
        h_ed = h_es = h
    else:
        h_ed, h_es = (max(axes[pair[0]], axes[pair[1]]) / N_DISCS
                      if views[pair[0]].ok and views[pair[1]].ok else nan
                      for pair in (ed_pair, es_pair))
    edv = _volume_ml(views[ed_pair[0]], views[ed_pair[1]], h_ed) if math.isfinite(h_ed) else nan
    esv = _volume_ml(views[es_pair[0]], views[es_pair[1]], h_es) if math.isfinite(h_es) else nan
    return Volumes(edv, esv, _ejection_fraction(edv, esv), reason, disc_height, h_ed, h_es,
                   names, views)


def biplane_volumes(ed_2ch: np.ndarray, es_2ch: np.ndarray, ed_4ch: np.ndarray,
                    es_4ch: np.ndarray, spacing_2ch: tuple[float, float],
                    spacing_4ch: tuple[float, float], *,
                    disc_height: DiscHeight = "camus") -> Volumes:
    """EDV, ESV and EF by the biplane method of discs (Simpson's biplane rule).

    Args:
        ed_2ch, es_2ch, ed_4ch, es_4ch: (H, W) binary LV cavity masks of the apical
            2-chamber and 4-chamber views at end diastole and end systole.
        spacing_2ch, spacing_4ch: pixel size ``(row_mm, col_mm)`` of each view's masks.
        disc_height: ``"camus"`` (default) or ``"textbook"`` (module docstring).

    Returns:
        ``Volumes``; NaN values with a ``reason`` for a mask that cannot be measured.

    Raises:
        ValueError: a mask that is not a 2-D binary array, a bad spacing, an unknown rule.

    Examples::

        >>> import numpy as np
        >>> rr, cc = np.mgrid[:200, :120]
        >>> def lv(long_px, half_px):
        ...     inside = ((rr - 180) / long_px) ** 2 + ((cc - 60) / half_px) ** 2 <= 1
        ...     return inside & (rr <= 180)
        >>> v = biplane_volumes(lv(150, 40), lv(120, 30), lv(150, 40), lv(120, 30),
        ...                     (0.5, 0.5), (0.5, 0.5), disc_height="textbook")
        >>> round(v.edv_ml), round(v.esv_ml), round(v.ef_percent), v.reason
        (65, 29, 55, None)
    """
    names = ("2CH_ED", "2CH_ES", "4CH_ED", "4CH_ES")
    masks = (ed_2ch, es_2ch, ed_4ch, es_4ch)
    spacings = (spacing_2ch, spacing_2ch, spacing_4ch, spacing_4ch)
    views = tuple(disc_diameters(m, s, name=n)
                  for n, m, s in zip(names, masks, spacings, strict=True))
    return _combine(names, views, (0, 2), (1, 3), disc_height)


def single_plane_volumes(ed: np.ndarray, es: np.ndarray, spacing: tuple[float, float], *,
                         disc_height: DiscHeight = "camus") -> Volumes:
    """EDV, ESV and EF from one apical view (single-plane method of discs, a_i = b_i), e.g.
    for data with only the 4-chamber view (EchoNet-Dynamic).

    Args:
        ed, es: (H, W) binary LV cavity masks at end diastole and end systole.
        spacing: pixel size ``(row_mm, col_mm)``.
        disc_height: ``"camus"`` (default: the longer of the two long axes / 20 for both)
            or ``"textbook"`` (each instant its own long axis / 20).

    Returns:
        ``Volumes`` with views named ED and ES.
    """
    names = ("ED", "ES")
    views = (disc_diameters(ed, spacing, name="ED"), disc_diameters(es, spacing, name="ES"))
    return _combine(names, views, (0, 0), (1, 1), disc_height)
