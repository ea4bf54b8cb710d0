"""Phantom patients: their random draws, their simulation in memory, their LV volumes.

A patient's attributes (sex, age, heart size, ejection fraction, frame rate, image quality
per view) and each view's acquisition and anatomy are drawn from random streams keyed by
``(seed, patient number, ...)`` (``_rng``), so patient 7 is the same whether 10 or 100
patients are written, and the same seed gives byte-identical arrays. At ES the LV shortens
and narrows (``anatomy._frame_geometry``); each frame is then simulated by
``acoustics._simulate_frame``.

Examples::

    >>> p = _draw_patient(_rng(0, 1, 0))
    >>> p["sex"] in ("M", "F") and 0.30 <= p["ef"] <= 0.70
    True
    >>> _draw_patient(_rng(0, 1, 0)) == p  # one stream per (seed, patient)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echo_vlsm.clinical import biplane_volumes
from echo_vlsm.data.phantom.acoustics import _simulate_frame
from echo_vlsm.data.phantom.anatomy import _frame_geometry
from echo_vlsm.structures import PHASES, QUALITIES, VIEWS


@dataclass
class PhantomView:
    """One apical view of a phantom patient: two frames (ED, ES) of one acquisition."""

    view: str
    quality: str
    spacing: float  # mm per pixel, rows and columns
    images: dict[str, np.ndarray] = field(default_factory=dict)  # phase -> (H, W) uint8
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # phase -> (H, W) uint8 0..3
    sector: np.ndarray | None = None  # (H, W) bool, the imaging fan


@dataclass
class PhantomPatient:
    """A phantom patient: attributes as in CAMUS' Info cfg, and its two views."""

    number: int
    sex: str
    age: int
    frame_rate: float
    nb_frames: int
    views: dict[str, PhantomView]
    lv_edv: float = 0.0  # mL, biplane method of discs on the label maps (CAMUS disc height)
    lv_esv: float = 0.0
    ef: float = 0.0  # percent

    @property
    def name(self) -> str:
        return f"patient{self.number:04d}"


# --------------------------------------------------------------------------- random draws


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def _draw_patient(rng: np.random.Generator) -> dict:
    """Patient-level attributes and the heart's size and function."""
    sex = "M" if rng.random() < 0.66 else "F"
    age = int(np.clip(np.round(rng.normal(65.0, 14.0)), 20, 95))
    body = (1.0 if sex == "M" else 0.92) * rng.uniform(0.9, 1.1)
    ef = rng.uniform(0.30, 0.70)
    frame_rate = float(np.round(rng.uniform(30.0, 80.0), 1))
    systole = rng.uniform(0.28, 0.40)  # seconds from ED to ES
    nb_frames = int(np.round(systole * frame_rate)) + 1
    q2 = QUALITIES[rng.choice(3, p=[0.35, 0.45, 0.20])]
    q4 = q2 if rng.random() < 0.6 else QUALITIES[rng.choice(3, p=[0.35, 0.45, 0.20])]
    return dict(sex=sex, age=age, body=body, ef=ef, frame_rate=frame_rate,
                nb_frames=nb_frames, quality={"2CH": q2, "4CH": q4})


def _draw_view(rng: np.random.Generator, view: str, patient: dict) -> dict:
    """Acquisition and anatomy of one view (shared by its ED and ES frames)."""
    height = int(rng.integers(420, 781))
    width = int(np.round(height * rng.uniform(0.7, 1.0)))
    depth = rng.uniform(140.0, 185.0)  # mm imaged along the central line
    spacing = float(np.round(np.clip(depth / height, 0.15, 0.30), 4))
    depth = height * spacing
    g: dict[str, Any] = dict(height=height, width=width, spacing=spacing, depth=depth)
    g["apex_col"] = width / 2 + rng.uniform(-0.03, 0.03) * width
    g["apex_row"] = rng.uniform(-6.0, 2.0)  # fan apex a little above or at the top row
    g["half_angle"] = math.radians(rng.uniform(33.0, 40.0))
    g["f0"] = rng.uniform(2.5, 3.5)  # MHz
    g["atten"] = rng.uniform(0.3, 0.55)  # dB / cm / MHz
    g["tgc"] = rng.uniform(0.7, 0.95)  # fraction of the attenuation compensated
    g["dyn_range"] = rng.uniform(42.0, 54.0)  # dB shown
    g["gamma"] = rng.uniform(1.1, 1.5)
    g["gain"] = rng.uniform(-4.0, 3.0)  # dB
    # Heart: lengths relative to the fan depth keep it in view whatever the depth setting.
    s = patient["body"] * rng.uniform(0.93, 1.07)
    R = depth
    apex_z = R * rng.uniform(0.12, 0.19)
    # mitral plane -> endocardial apex at ED, mm (CAMUS-like LVEDV ~ 70-200 ml)
    lv_len = min(rng.normal(86.0, 7.0) * s, 0.52 * R)
    # tilt of the long axis; in 4CH the LV runs from the apex down to the right
    tilt = math.radians(rng.uniform(-14.0, -2.0) if view == "4CH" else rng.uniform(-9.0, 9.0))
    shift = R * (rng.uniform(-0.02, 0.04) if view == "4CH" else rng.uniform(-0.03, 0.03))
    g["apex"] = np.array([shift, apex_z])  # (x, z) mm of the endocardial apex
    g["axis"] = np.array([math.sin(tilt), -math.cos(tilt)])  # mitral -> apex, unit
    g["lv_len"] = lv_len
    g["lv_halfwidth"] = lv_len * rng.uniform(0.29, 0.36)
    g["lv_base"] = rng.uniform(0.12, 0.25)  # ellipse centre below the mitral plane (x len)
    g["wall"] = rng.uniform(7.0, 11.0) * patient["body"]  # mm at ED
    g["wall_lr"] = rng.uniform(0.85, 1.15, size=2)  # septal / lateral factors
    g["wall_apex"] = rng.uniform(0.6, 0.9)
    g["harm"] = rng.normal(0.0, 0.025, size=(4, 2))  # shape harmonics of the cavity
    g["la_len"] = min(rng.uniform(38.0, 52.0) * s, 0.95 * R - apex_z - lv_len)
    g["la_halfwidth"] = g["lv_halfwidth"] * rng.uniform(0.85, 1.15)
    g["la_shift"] = rng.uniform(-0.1, 0.1)
    g["peri_gap"] = rng.uniform(1.0, 3.5)
    g["vessel"] = rng.random() < 0.5  # descending aorta behind the LA
    g["vessel_pos"] = rng.uniform([-0.25, 0.05], [0.35, 0.2])
    g["leaflet"] = rng.uniform(0.35, 0.55)
    g["rv_len"] = rng.uniform(0.7, 0.85)
    g["rv_width"] = rng.uniform(0.55, 0.8)
    g["ra_len"] = rng.uniform(0.75, 1.0)
    # papillary muscles (u, v relative to the cavity's length and half-width; semi-axes mm)
    n_pap = int(rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3]))
    g["papillary"] = [
        (rng.uniform(0.2, 0.45), sgn * rng.uniform(0.55, 0.8), rng.uniform(5.0, 9.0),
         rng.uniform(2.5, 4.5))
        for sgn in rng.permutation([-1.0, 1.0])[:n_pap]
    ] or None
    g["la_harm"] = rng.normal(0.0, 0.03, size=(3, 2))  # shape harmonics of the LA
    g["texture_seed"] = int(rng.integers(2**63))  # acquisition: shared by ED and ES
    _fit_in_fan(g)
    return g


def _fit_in_fan(g: dict) -> None:
    """Move (and if need be shrink) the heart so that the LV and its wall at ED lie inside
    the fan and the image, as a sonographer centres the apical view."""
    t = np.linspace(0.0, np.pi, 64)
    margin = math.radians(3.0)
    half_w = g["width"] / 2 * g["spacing"]
    off = (g["apex_col"] - g["width"] / 2) * g["spacing"]  # fan apex vs. image centre, mm
    for _ in range(60):
        L, b = g["lv_len"], g["lv_halfwidth"]
        d = g["lv_base"] * L
        a_out = L + d + g["wall"] * g["wall_apex"]
        b_out = b + g["wall"] * max(g["wall_lr"])
        u = -d + a_out * np.cos(t)
        v = b_out * np.sin(t)
        keep = u >= 0
        u, v = np.concatenate([u[keep], u[keep]]), np.concatenate([v[keep], -v[keep]])
        ax = g["axis"]
        mitral = g["apex"] - L * ax
        x = mitral[0] + u * ax[0] - v * ax[1]
        z = mitral[1] + u * ax[1] + v * ax[0]
        ang = np.arctan2(x, z)
        lim = g["half_angle"] - margin
        col_lo, col_hi = -half_w - off + 2.0, half_w - off - 2.0  # mm, image sides
        over_r = max(ang.max() - lim, 0.0) * z.mean() + max(x.max() - col_hi, 0.0)
        over_l = max(-lim - ang.min(), 0.0) * z.mean() + max(col_lo - x.min(), 0.0)
        if over_r <= 0 and over_l <= 0:
            return
        if over_r > 0 and over_l > 0:  # too wide for the fan: a slightly smaller heart
            for key in ("lv_len", "lv_halfwidth", "wall", "la_len", "la_halfwidth"):
                g[key] *= 0.97
        else:
            g["apex"] = g["apex"] + np.array([-1.0 if over_r > 0 else 1.0, 0.0])



# --------------------------------------------------------------------------- patients


def simulate_patient(seed: int, number: int) -> PhantomPatient:
    """Simulate phantom patient ``number`` (1-based) of ``seed``: both views, both phases.

    Depends only on ``(seed, number)``. LV volumes and the ejection fraction are measured on
    the native label maps by the biplane method of discs (``echo_vlsm.clinical``, CAMUS
    disc height), as a tracing of the images would give them.
    """
    if int(number) < 1:
        raise ValueError(f"patient number must be >= 1, got {number}")
    p = _draw_patient(_rng(seed, number, 0))
    views = {}
    for vi, view in enumerate(VIEWS):
        g = _draw_view(_rng(seed, number, 1, vi), view, p)
        pv = PhantomView(view=view, quality=p["quality"][view], spacing=g["spacing"])
        for fi, phase in enumerate(PHASES):
            rng = _rng(seed, number, 2, vi, fi)
            f = _frame_geometry(g, phase, p["ef"], rng)
            image, label, sector = _simulate_frame(g, f, view, pv.quality, rng)
            pv.images[phase], pv.labels[phase] = image, label
            pv.sector = sector
        views[view] = pv
    patient = PhantomPatient(
        number=int(number), sex=p["sex"], age=p["age"], frame_rate=p["frame_rate"],
        nb_frames=p["nb_frames"], views=views,
    )
    patient.lv_edv, patient.lv_esv, patient.ef = _biplane_volumes(patient)
    return patient


def simulate_stages(seed: int, number: int, view: str = "2CH", phase: str = "ED") -> dict:
    """The steps of one phantom frame, for teaching: on the scan lines (depth x angle)
    ``classes`` (tissue class), ``reflectivity`` (scattering amplitude), ``envelope_db``
    (echo envelope after attenuation, noise and TGC, in dB) and ``log_compressed``
    (0..255); then the scan-converted ``image``, ``label`` and ``sector``. Identical to the
    frame ``simulate_patient`` makes."""
    if view not in VIEWS or phase not in PHASES:
        raise ValueError(f"view must be one of {VIEWS} and phase one of {PHASES}")
    p = _draw_patient(_rng(seed, number, 0))
    vi, fi = VIEWS.index(view), PHASES.index(phase)
    g = _draw_view(_rng(seed, number, 1, vi), view, p)
    rng = _rng(seed, number, 2, vi, fi)
    f = _frame_geometry(g, phase, p["ef"], rng)
    stages: dict = {}
    image, label, sector = _simulate_frame(g, f, view, p["quality"][view], rng, stages)
    stages.update(image=image, label=label, sector=sector, quality=p["quality"][view])
    return stages


def _biplane_volumes(patient: PhantomPatient) -> tuple[float, float, float]:
    """EDV, ESV (mL) and EF (%) by the biplane method of discs on the native LV label maps
    (``echo_vlsm.clinical.biplane_volumes``, CAMUS disc height), rounded to 0.1.

    Raises:
        RuntimeError: a label map the method cannot measure (never seen; it would mean the
            anatomy drew an LV cut by the image border or without a mitral plane).
    """
    v2, v4 = patient.views["2CH"], patient.views["4CH"]
    volumes = biplane_volumes(v2.labels["ED"] == 1, v2.labels["ES"] == 1,
                              v4.labels["ED"] == 1, v4.labels["ES"] == 1,
                              (v2.spacing, v2.spacing), (v4.spacing, v4.spacing))
    if volumes.reason is not None:
        raise RuntimeError(f"phantom {patient.name}: its LV label maps give no volume "
                           f"({volumes.reason})")
    return (round(volumes.edv_ml, 1), round(volumes.esv_ml, 1),
            round(volumes.ef_percent, 1))
