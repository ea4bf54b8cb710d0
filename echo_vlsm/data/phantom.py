"""The built-in echo phantom: a CAMUS-like tree of simulated apical echocardiograms.

Each phantom patient has an apical two-chamber (2CH) and four-chamber (4CH) view at
end-diastole (ED) and end-systole (ES), with a label map in CAMUS' convention
(0 background, 1 LV cavity, 2 myocardium, 3 left atrium) and ``Info_<view>.cfg`` files,
written in the layout of the CAMUS 2023 (NIfTI) or 2019 (MetaImage) release, so
``read_camus`` reads it like the real thing (Leclerc et al., IEEE TMI 2019).

How an image is made (a simplified pulse-echo model, computed on the scan lines):

1. Anatomy in mm: a bullet-shaped LV cavity pointing to the apex of the fan, a myocardial
   wall around it, open at the mitral plane, the LA below the mitral plane, mitral leaflets,
   pericardium; in 4CH also the right ventricle and atrium (unlabelled blood) with septa.
   Size, tilt, wall thickness and shape harmonics are drawn per patient; at ES the LV
   shortens and narrows (ejection fraction 30-70 %, area-length model), the wall thickens
   and the LA fills.
2. A tissue reflectivity map on the polar grid (depth x angle): blood low, myocardium high
   and angle-dependent (specular walls), other tissue medium, with slow heterogeneity;
   image quality (Good / Medium / Poor) sets clutter haze, wall dropout, rib shadows and
   electronic noise.
3. Random scatterers (dense, Gaussian) weighted by the reflectivity, convolved with a
   point-spread function: a Gaussian-modulated cosine along depth (RF, 2.5-3.5 MHz) and a
   Gaussian across the beam; depth attenuation, receiver noise, time-gain compensation,
   envelope detection (Hilbert transform along depth), log compression.
4. Scan conversion to a Cartesian fan (``cv2.remap``), apex at the top, zero outside it.

Every array depends only on ``(seed, patient number)``: patient 7 is the same whether 10
or 100 patients are written, and the same seed gives byte-identical arrays.

Examples::

    root = write_phantom("data/raw/phantom", n_patients=20, seed=0)   # 2023 layout
    records = read_camus(root)
    patient = simulate_patient(seed=0, number=1)                      # in memory
    patient.views["4CH"].images["ED"].shape
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from echo_vlsm.io import write_json_atomic, write_text_atomic
from echo_vlsm.structures import PHASES, QUALITIES, VIEWS

PHANTOM_VERSION = 1
MANIFEST = "phantom.json"
PARTIAL = ".phantom.partial"
PATIENT_MARKER = ".phantom_patient.json"  # in each patient folder: what it holds
LAYOUTS = ("2023", "2019")
SOUND_SPEED = 1.54  # mm / us

# Tissue classes of the simulation (labels 1..3 are CAMUS' structures; the rest label 0).
_TISSUE, _LV, _MYO, _LA, _RBLOOD, _RWALL, _PERI, _VALVE, _VESSEL, _PAPILLARY = range(10)
# Mean scattering amplitude per class (myocardium = 1).
_REFLECTIVITY = np.array([0.3, 0.02, 1.0, 0.02, 0.02, 0.8, 1.9, 1.5, 0.02, 0.7], np.float32)
# Per quality: cavity haze, near-field clutter, specular wall dependence, dropout, receiver
# noise (snr: dB of the mean echo over the noise at the deepest point, before the time-gain
# compensation), probability of a rib shadow.
_QUALITY = {
    "Good": dict(haze=0.03, near=0.25, specular=0.35, dropout=0.15, snr=16.0, shadow=0.0),
    "Medium": dict(haze=0.06, near=0.45, specular=0.5, dropout=0.35, snr=12.0, shadow=0.25),
    "Poor": dict(haze=0.11, near=0.7, specular=0.65, dropout=0.6, snr=7.0, shadow=0.6),
}


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
    lv_edv: float = 0.0  # ml, biplane area-length from the label maps
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
                nb_frames=nb_frames, quality={"2CH": q2, "4CH": q4})  # fmt: skip


def _draw_view(rng: np.random.Generator, view: str, patient: dict) -> dict:
    """Acquisition and anatomy of one view (shared by its ED and ES frames)."""
    height = int(rng.integers(420, 781))
    width = int(np.round(height * rng.uniform(0.7, 1.0)))
    depth = rng.uniform(140.0, 185.0)  # mm imaged along the central line
    spacing = float(np.round(np.clip(depth / height, 0.15, 0.30), 4))
    depth = height * spacing
    g = dict(height=height, width=width, spacing=spacing, depth=depth)
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
    ] or None  # fmt: skip
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


# --------------------------------------------------------------------------- anatomy


def _frame_geometry(g: dict, phase: str, ef: float, rng_phase: np.random.Generator) -> dict:
    """Chamber sizes of one frame: ED as drawn; at ES the LV shortens and narrows so that
    the area-length volume falls by ``ef``, the wall thickens and the LA grows."""
    f = dict(g)
    if phase == "ES":
        s_len = (1.0 - ef) ** rng_phase.uniform(0.12, 0.25)
        s_width = math.sqrt((1.0 - ef) / s_len)
        f["lv_len"] = g["lv_len"] * s_len
        f["lv_halfwidth"] = g["lv_halfwidth"] * s_width
        f["wall"] = g["wall"] * rng_phase.uniform(1.25, 1.5)
        f["la_len"] = g["la_len"] * rng_phase.uniform(1.12, 1.3)
        f["la_halfwidth"] = g["la_halfwidth"] * rng_phase.uniform(1.08, 1.2)
        f["leaflet_open"] = 0.0
    else:
        f["leaflet_open"] = rng_phase.uniform(0.0, 0.4)
    d, a = g["lv_base"] * g["lv_len"], g["lv_len"] * (1 + g["lv_base"])
    f["ann_ed"] = g["lv_halfwidth"] * math.sqrt(1 - (d / a) ** 2)
    # the apex stays (nearly) put; the mitral plane moves towards it at ES
    f["mitral"] = g["apex"] - f["lv_len"] * g["axis"]
    return f


def _ellipse_rho(u, v, cu, a, b, harm=None):
    """Normalised radius of an ellipse centred at (cu, 0) in the (u, v) frame (1 on the
    border), with optional low-order harmonics of the border (k = 2, 3, ...)."""
    du = (u - cu) * np.float32(1.0 / a)
    dv = v * np.float32(1.0 / b)
    rho = np.sqrt(du * du + dv * dv)
    if harm is not None:
        rho = rho / (1.0 + _harmonics(du, dv, rho, harm))
    return rho


def _harmonics(du, dv, rho, harm):
    """sum_k c_k cos(k phi) + s_k sin(k phi), k = 2, 3, ..., phi the polar angle of (du, dv)."""
    w = (du + 1j * dv) / (rho + np.float32(1e-6))  # exp(i phi)
    wk = w * w
    bump = np.zeros_like(rho)
    for c, s in harm:
        bump += np.float32(c) * wk.real + np.float32(s) * wk.imag
        wk = wk * w
    return bump


def _anatomy(x: np.ndarray, z: np.ndarray, f: dict, view: str, jitter=None,
             echo: bool = False) -> np.ndarray:  # fmt: skip
    """Tissue class (``_TISSUE`` .. ``_PAPILLARY``) at points (x, z) in mm of one frame.

    For the echo simulation (``echo=True``) ``jitter`` (same shape, in units of the
    normalised radius) roughens the borders and the mitral leaflets and papillary muscles
    are drawn; the label maps are drawn without them (the muscles belong to the cavity, as
    in CAMUS' annotation)."""
    ax = f["axis"]
    ev = np.array([-ax[1], ax[0]])  # across the long axis, pointing to the right
    dx = x - np.float32(f["mitral"][0])
    dz = z - np.float32(f["mitral"][1])
    u = dx * np.float32(ax[0]) + dz * np.float32(ax[1])  # along the axis, + to the apex
    v = dx * np.float32(ev[0]) + dz * np.float32(ev[1])
    j = np.float32(0.0) if jitter is None else jitter
    cls = np.full(x.shape, _TISSUE, np.uint8)

    L, b = f["lv_len"], f["lv_halfwidth"]
    d = f["lv_base"] * L
    a = L + d
    w = f["wall"]
    rho_lv = _ellipse_rho(u, v, -d, a, b, f["harm"]) + j
    # wall thickness: septal (left) and lateral (right) sides blend smoothly
    side = 0.5 + 0.5 * np.tanh(v * np.float32(1.2 / b))
    wl, wr = f["wall_lr"] * w
    wall_side = np.float32(wl) + np.float32(wr - wl) * side
    a_out = a + w * f["wall_apex"]
    du_out = (u + np.float32(d)) / np.float32(a_out)
    dv_out = v / (np.float32(b) + wall_side)
    rho_out = np.sqrt(du_out * du_out + dv_out * dv_out)
    rho_out = rho_out / (1.0 + _harmonics(du_out, dv_out, rho_out, f["harm"])) + 0.5 * j
    gap = f["peri_gap"] + 1.2
    du_p = (u + np.float32(d)) / np.float32(a_out + gap)
    dv_p = v / (np.float32(b + gap) + wall_side)
    rho_peri = np.sqrt(du_p * du_p + dv_p * dv_p)
    above = u >= 0

    # the LA below the mitral plane, its top as wide as the mitral annulus
    la_a, la_b = f["la_len"] / 2, f["la_halfwidth"]
    ann = b * math.sqrt(max(1e-6, 1 - (d / a) ** 2))  # half-width of the annulus
    la_cu = -la_a * 0.8
    # the LA's top spans the annulus, which narrows far less than the cavity in systole
    ann_ed = f["ann_ed"]
    la_b = max(la_b, ann_ed / math.sqrt(1 - 0.8**2) * 1.05)
    v_la = v - np.float32(f["la_shift"] * ann)
    du_la = (u - np.float32(la_cu)) / np.float32(la_a)
    dv_la = v_la / np.float32(la_b)
    rho_la = np.sqrt(du_la * du_la + dv_la * dv_la)
    # shape harmonics fade out towards the mitral plane, where the LA spans the annulus
    fade = np.clip(u / np.float32(la_cu), 0.0, 1.0)
    rho_la = rho_la / (1.0 + fade * _harmonics(du_la, dv_la, rho_la, f["la_harm"])) + j
    below = ~above

    if view == "4CH":  # right heart on the left of the image, septum between
        sep = f["wall_lr"][0] * w
        rv_b = b * f["rv_width"]
        rv_cv = -(b + sep + rv_b * 0.95)
        rv_a = a * f["rv_len"]
        rho_rv = _ellipse_rho(u, v - np.float32(rv_cv), -d, rv_a, rv_b) + j
        rho_rvw = _ellipse_rho(u, v - np.float32(rv_cv), -d, rv_a + 4, rv_b + 4)
        ra_a = la_a * f["ra_len"]
        ra_b = rv_b * 0.95
        ra_cv = -(la_b * 0.9 + 3.0 + ra_b) + f["la_shift"] * ann
        ra_cu = la_cu * f["ra_len"]
        rho_ra = _ellipse_rho(u, v - np.float32(ra_cv), ra_cu, ra_a, ra_b) + j
        rho_raw = _ellipse_rho(u, v - np.float32(ra_cv), ra_cu, ra_a + 3, ra_b + 3)
        cls[(rho_rvw <= 1) & above] = _RWALL
        cls[(rho_raw <= 1) & below] = _RWALL
        cls[(rho_rv <= 1) & above] = _RBLOOD
        cls[(rho_ra <= 1) & below] = _RBLOOD

    if f["vessel"]:  # descending aorta: a round blood pool behind the LA
        R = f["depth"]
        cx = f["mitral"][0] + f["vessel_pos"][0] * R
        cz = f["mitral"][1] + f["la_len"] + f["vessel_pos"][1] * R
        r2 = (x - np.float32(cx)) ** 2 + (z - np.float32(cz)) ** 2
        cls[r2 <= (0.045 * R + 2.5) ** 2] = _RWALL
        cls[r2 <= (0.045 * R) ** 2] = _VESSEL

    cls[(rho_peri <= 1) & (rho_out > 1) & above] = _PERI
    cls[(rho_out <= 1) & above] = _MYO
    cls[(rho_la <= 1) & below] = _LA
    cls[(rho_lv <= 1) & above] = _LV

    if echo and f["papillary"] is not None:  # inside the cavity, near the free walls
        for pu, pv, pa, pb in f["papillary"]:
            pu_mm, pv_mm = pu * L, pv * b
            inside = ((u - np.float32(pu_mm)) / np.float32(pa)) ** 2 + (
                (v - np.float32(pv_mm)) / np.float32(pb)
            ) ** 2 <= 1
            cls[inside & (cls == _LV)] = _PAPILLARY
    if echo:  # mitral leaflets: hinged at the annulus, into the LV, open at early ED
        tip = f["leaflet"] * ann
        open_ = f.get("leaflet_open", 0.0)
        near = np.abs(u) <= tip + 2.0
        uu, vv = u[near], v[near]
        hit = np.zeros(uu.shape, bool)
        for sgn in (-1.0, 1.0):
            dirv = np.array([open_ + 0.15, -sgn * (1.0 - open_)])
            dirv = dirv / np.hypot(*dirv)
            pv = vv - np.float32(sgn * ann)
            t = np.clip(uu * np.float32(dirv[0]) + pv * np.float32(dirv[1]), 0.0, tip)
            dist = np.hypot(uu - t * np.float32(dirv[0]), pv - t * np.float32(dirv[1]))
            hit |= dist <= 1.1
        sub = cls[near]
        sub[hit] = _VALVE
        cls[near] = sub
    return cls


def _anatomy_grid(x: np.ndarray, z: np.ndarray, f: dict, view: str, step: int = 6) -> np.ndarray:
    """``_anatomy`` without valves on a large 2-D grid, evaluated only on the bounding box of
    the heart found on a coarse subsample (a 5-10x saving on a CAMUS-sized image)."""
    coarse = _anatomy(x[::step, ::step], z[::step, ::step], f, view)
    rows, cols = np.nonzero(coarse != _TISSUE)
    out = np.full(x.shape, _TISSUE, np.uint8)
    if rows.size == 0:
        return out
    pad = 2 * step
    r0, r1 = max(0, rows.min() * step - pad), min(x.shape[0], rows.max() * step + pad + 1)
    c0, c1 = max(0, cols.min() * step - pad), min(x.shape[1], cols.max() * step + pad + 1)
    out[r0:r1, c0:c1] = _anatomy(x[r0:r1, c0:c1], z[r0:r1, c0:c1], f, view)
    return out


def _labels_of(cls: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, np.uint8)
    lut[_LV], lut[_MYO], lut[_LA] = 1, 2, 3
    return lut[cls]


# --------------------------------------------------------------------------- echo physics


def _smooth_noise(rng, shape, sigma):
    """Zero-mean, unit-variance Gaussian random field of ``shape`` with correlation length
    ``sigma`` (pixels per axis), drawn on a coarser grid and interpolated (fast)."""
    import cv2
    from scipy.ndimage import gaussian_filter

    step = [max(1, int(s // 2)) for s in sigma]
    small = [int(math.ceil(n / k)) + 1 for n, k in zip(shape, step)]
    n = rng.standard_normal(small, dtype=np.float32)
    n = gaussian_filter(n, [s / k for s, k in zip(sigma, step)], mode="wrap")
    if step != [1, 1]:
        n = cv2.resize(n, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return n / (n.std() + 1e-8)


def _simulate_frame(g: dict, f: dict, view: str, quality: str, rng, stages=None) -> tuple:
    """B-mode frame (H, W) uint8, label map (H, W) uint8, sector mask (H, W) bool; when
    ``stages`` is a dict, the intermediate maps on the scan lines are put in it."""
    import cv2
    import scipy.fft as sfft
    from scipy.ndimage import gaussian_filter

    q = _QUALITY[quality]
    R, alpha = g["depth"] * 1.02, g["half_angle"]
    n_t = int(np.clip(np.round(2 * alpha / math.radians(0.35)), 160, 260))  # scan lines
    # coarse polar grid for the anatomy (0.35 mm x one line), refined by interpolation
    n_rc = int(math.ceil(R / 0.35))
    rc = (np.arange(n_rc, dtype=np.float32) + 0.5) * np.float32(R / n_rc)
    th = np.linspace(-alpha, alpha, n_t, dtype=np.float32)
    xx = rc[:, None] * np.sin(th)[None, :]
    zz = rc[:, None] * np.cos(th)[None, :]

    # What belongs to the acquisition (probe, settings, acoustic window, the tissue around
    # the heart) is drawn from the view's stream, shared by its ED and ES frames; the
    # heart's border roughness, the scatterers and the noise from the frame's stream.
    if "_acquisition" not in g:  # computed once per view (g is shared by its frames)
        vrng = np.random.default_rng(g["texture_seed"])
        g["_acquisition"] = (
            _smooth_noise(vrng, (n_rc, n_t), (10, 6)),  # tissue heterogeneity
            _smooth_noise(vrng, (n_rc, n_t), (25, 12)),  # wall dropout pattern
            _smooth_noise(vrng, (n_rc, n_t), (20, 10)),  # haze in the blood pools
            _smooth_noise(vrng, (n_rc, n_t), (4, 10)),  # near-field reverberation
            vrng.uniform(8.0, 18.0),  # depth scale of the near-field clutter, mm
            *vrng.uniform([1.5, 0, 10], [3, 2 * np.pi, 22]),  # chest-wall layers
            vrng.random(),  # a rib shadow where below the quality's probability
            *vrng.uniform([-0.8, 0.08, 8], [0.8, 0.2, 20]),  # its angle, width, depth
            vrng.uniform(0.55, 0.8) * math.radians(1.0) / (2 * alpha / (n_t - 1)),  # beam
            vrng.uniform(0.35, 0.5),  # pulse length / wavelength
            vrng.uniform(-2.0, 2.0, 8),  # TGC slider offsets, dB
        )
    (hetero, dropout, haze_field, near_field, near_depth, layer_period, layer_phase,
     layer_depth, shadow_u, shadow_c, shadow_w, shadow_z, beam, sigma_ax_rel,
     tgc_knots) = g["_acquisition"]  # fmt: skip

    # --- tissue reflectivity map (mean scattering amplitude) on the scan lines
    jitter = 0.035 * _smooth_noise(rng, (n_rc, n_t), (6, 4))  # trabeculae, border roughness
    cls = _anatomy(xx, zz, f, view, jitter=jitter, echo=True)
    refl = _REFLECTIVITY[cls] * np.exp(0.35 * hetero)  # slow heterogeneity
    myo = cls == _MYO
    if myo.any():  # specular walls: a wall along the beam (lateral walls) echoes less
        m = gaussian_filter(myo.astype(np.float32) + (cls == _LV) * 2.0, (5, 3))
        gr, gt = np.gradient(m)
        gt = gt / (rc[:, None] * (2 * alpha / max(n_t - 1, 1)) / (R / n_rc))  # per mm
        cos2 = gr**2 / (gr**2 + gt**2 + 1e-12)
        spec = (1 - q["specular"]) + q["specular"] * cos2
        drop = np.clip(1.0 + 0.8 * dropout, 0, 1)
        drop = 1.0 - q["dropout"] * (1.0 - drop)  # patchy wall dropout
        refl = np.where(myo, refl * spec * drop, refl)
    # clutter: haze in the blood pools, reverberation in the near field
    blood = np.isin(cls, (_LV, _LA, _RBLOOD, _VESSEL))
    haze = q["haze"] * np.exp(0.5 * haze_field)
    near = q["near"] * np.exp(-rc / near_depth)[:, None] * np.exp(0.5 * near_field)
    refl = np.sqrt(refl**2 + (blood * haze) ** 2 + near**2)
    # chest-wall layers in the first ~20 mm
    layers = 0.6 * (1 + np.sin(rc / layer_period + layer_phase))
    refl = refl + (layers * (rc < layer_depth) * 0.4)[:, None]
    if shadow_u < q["shadow"]:  # rib shadow: a band of lines losing signal with depth
        band = np.exp(-0.5 * ((th - shadow_c * alpha) / (shadow_w * alpha)) ** 2)
        refl = refl * (1 - 0.85 * band[None, :] * (rc[:, None] > shadow_z))

    # --- pulse-echo: scatterers x reflectivity, convolved with the PSF
    lam = SOUND_SPEED / g["f0"]  # wavelength, mm
    dr = lam / 7.0  # RF sampling along depth (the echo oscillates at 2 / lambda cycles/mm)
    n_r = int(math.ceil(R / dr))
    refl_f = cv2.resize(refl.astype(np.float32), (n_t, n_r), interpolation=cv2.INTER_LINEAR)
    scat = refl_f * rng.standard_normal((n_r, n_t), dtype=np.float32)
    k = 2 * int(math.ceil(3 * beam)) + 1
    scat = cv2.GaussianBlur(scat, (k, 1), sigmaX=beam, sigmaY=0.1)  # lateral beam profile
    # axial PSF: Gaussian-modulated cosine, cos(2 pi (2 / lam) z) exp(-z^2 / 2 s^2); in the
    # Fourier domain along depth its positive-frequency lobe is a Gaussian at k0 = 2 / lam.
    # Keeping only that lobe gives the analytic signal of the RF echo (what a Hilbert
    # transform gives), and shifting it by k0 to baseband with fewer samples is the scanner's
    # quadrature demodulation; |IQ| is the envelope.
    sigma_ax = lam * sigma_ax_rel
    n_fft = sfft.next_fast_len(n_r + int(8 * sigma_ax / dr), real=True)
    spec = sfft.rfft(scat, n=n_fft, axis=0)
    dk = 1.0 / (n_fft * dr)
    k0 = 2.0 / lam
    m = min(n_fft, sfft.next_fast_len(int(math.ceil(n_fft * dr / sigma_ax))))
    j0 = int(round(k0 / dk))
    js = np.arange(max(0, j0 - m // 2), min(spec.shape[0], j0 + (m + 1) // 2))
    H = np.exp(-0.5 * ((js * dk - k0) * 2 * np.pi * sigma_ax) ** 2).astype(np.float32)
    iq_spec = np.zeros((m, n_t), np.complex64)
    iq_spec[(js - j0) % m] = spec[js] * H[:, None]
    iq = sfft.ifft(iq_spec, axis=0)
    dr_env = n_fft * dr / m
    n_env = int(math.ceil(n_r * dr / dr_env))
    iq = iq[:n_env]
    r = (np.arange(n_env, dtype=np.float32) * np.float32(dr_env))[:, None]
    # depth attenuation (round trip), receiver noise, time-gain compensation
    att_db = g["atten"] * g["f0"] * 2 * r / 10.0
    scale = float(np.sqrt(np.mean(np.abs(iq) ** 2)) + 1e-12)
    iq = iq * (10 ** (-att_db / 20)).astype(np.float32)
    noise = rng.standard_normal((n_env, n_t, 2), dtype=np.float32).view(np.complex64)[..., 0]
    noise_db = float(att_db[-1, 0]) + q["snr"]
    iq = iq + np.float32(scale * 10 ** (-noise_db / 20) / math.sqrt(2)) * noise
    tgc_wiggle = np.interp(r[:, 0], np.linspace(0, R, 8), tgc_knots)
    gain = 10 ** ((g["tgc"] * att_db + tgc_wiggle[:, None]) / 20)
    env = np.abs(iq) * gain.astype(np.float32)

    # --- log compression to 8 bit
    db = 20 * np.log10(env + 1e-12)
    top = np.percentile(db[::4, :], 99.0) + g["gain"]
    img = np.clip((db - (top - g["dyn_range"])) / g["dyn_range"], 0, 1) ** g["gamma"]
    img = (img * 255).astype(np.float32)
    if stages is not None:
        stages.update(classes=cls, reflectivity=refl, envelope_db=db, log_compressed=img,
                      depth_mm=R, half_angle=alpha)  # fmt: skip

    # scan conversion to the Cartesian fan
    H, W, sp = g["height"], g["width"], g["spacing"]
    ys = (np.arange(H, dtype=np.float32) - g["apex_row"]) * sp
    xs = (np.arange(W, dtype=np.float32) - g["apex_col"]) * sp
    X, Z = np.meshgrid(xs, ys)
    rad = np.hypot(X, Z)
    ang = np.arctan2(X, Z)
    sector = (np.abs(ang) <= alpha) & (rad <= g["depth"] * 0.995) & (Z > 0)
    map_r = (rad / dr_env).astype(np.float32)
    map_t = ((ang + alpha) / (2 * alpha) * (n_t - 1)).astype(np.float32)
    bmode = cv2.remap(img, map_t, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    bmode = np.where(sector, np.clip(np.round(bmode), 0, 255), 0).astype(np.uint8)

    label = _labels_of(_anatomy_grid(X, Z, f, view))
    label[~sector] = 0
    return bmode, label, sector


# --------------------------------------------------------------------------- patients


def simulate_patient(seed: int, number: int) -> PhantomPatient:
    """Simulate phantom patient ``number`` (1-based) of ``seed``: both views, both phases.

    Depends only on ``(seed, number)``. LV volumes (biplane area-length) and the
    ejection fraction are measured on the label maps, so they agree with the images.
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
    )  # fmt: skip
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


def _area_length(label: np.ndarray, spacing: float) -> tuple[float, float]:
    """LV cavity area (mm^2) and length (mm: farthest cavity point from the mitral plane's
    centre, approximated by the cavity's extent along its main axis)."""
    ys, xs = np.nonzero(label == 1)
    if ys.size < 3:
        return 0.0, 1.0
    pts = np.stack([xs, ys], 1).astype(np.float64) * spacing
    area = ys.size * spacing**2
    c = pts - pts.mean(0)
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    proj = c @ vt[0]
    return area, float(proj.max() - proj.min())


def _biplane_volumes(patient: PhantomPatient) -> tuple[float, float, float]:
    """LV volumes (ml) by the biplane area-length method, V = 8 A2 A4 / (3 pi L)."""
    vols = []
    for phase in PHASES:
        a2, l2 = _area_length(patient.views["2CH"].labels[phase], patient.views["2CH"].spacing)
        a4, l4 = _area_length(patient.views["4CH"].labels[phase], patient.views["4CH"].spacing)
        vols.append(8.0 * a2 * a4 / (3.0 * math.pi * max(l2, l4)) / 1000.0)
    edv, esv = vols
    return round(edv, 1), round(esv, 1), round(100.0 * (1 - esv / max(edv, 1e-6)), 1)


# --------------------------------------------------------------------------- splits


def split_sizes(n_patients: int, layout: str = "2023") -> dict[str, int]:
    """Number of patients per split: 2023 ~70/10/20 %, 2019 ~80/10/10 % (validation at
    most 50, the study's rule); at least one each from 3 patients on."""
    n = int(n_patients)
    if n < 3:
        return {"train": n - (n == 2), "val": 0, "test": int(n == 2)}
    test_frac = 0.2 if layout == "2023" else 0.1
    test = max(1, int(round(test_frac * n)))
    val = max(1, int(round(0.1 * n)))
    if layout == "2019":
        val = min(val, 50)
    train = n - test - val
    if train < 1:
        test, val, train = 1, 1, n - 2
    return {"train": train, "val": val, "test": test}


def patient_splits(n_patients: int, layout: str = "2023") -> list[tuple[int, str, str]]:
    """``(number, split, folder)`` per phantom patient: the first patients form the
    validation split, the last ones the test split, the rest training.

    ``folder`` is the patient's path below the root. In the 2023 layout it is
    ``database_nifti/patientXXXX`` with XXXX the phantom number. In the 2019 layout the
    names follow the study's split rule (training patients 1-50 are validation): the
    validation patients are ``training/patient0001..``, the training ones start at
    ``training/patient0051``, and the test patients ``testing/patient....`` continue the
    numbering, so ``read_camus`` recovers the same three splits for any number of patients.
    """
    check_layout(layout)
    sizes = split_sizes(n_patients, layout)
    out = []
    for i in range(1, n_patients + 1):
        if i <= sizes["val"]:
            split = "val"
        elif i <= sizes["val"] + sizes["train"]:
            split = "train"
        else:
            split = "test"
        if layout == "2023":
            folder = f"database_nifti/patient{i:04d}"
        elif split == "val":
            folder = f"training/patient{i:04d}"
        else:
            k = 50 + i - sizes["val"]
            folder = f"{'training' if split == 'train' else 'testing'}/patient{k:04d}"
        out.append((i, split, folder))
    return out


def check_layout(layout: str) -> str:
    if str(layout) not in LAYOUTS:
        raise ValueError(f"layout {layout!r} not known; expected one of {LAYOUTS}")
    return str(layout)


# --------------------------------------------------------------------------- writing


def _cfg_text(patient: PhantomPatient, view: str, layout: str) -> str:
    pv = patient.views[view]
    lines = [
        "ED: 1",
        f"ES: {patient.nb_frames}",
        f"NbFrame: {patient.nb_frames}",
        f"Sex: {patient.sex}",
        f"Age: {patient.age}",
        f"ImageQuality: {pv.quality}",
    ]
    if layout == "2023":
        lines += [f"EF: {patient.ef}", f"FrameRate: {patient.frame_rate}"]
    else:
        lines += [f"LVedv: {patient.lv_edv}", f"LVesv: {patient.lv_esv}", f"LVef: {patient.ef}"]
    return "\n".join(lines) + "\n"


def _write_sitk(array: np.ndarray, spacing: float, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing((float(spacing), float(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mhd":  # header + .raw
        sitk.WriteImage(img, str(path), useCompression=False)
        return
    sitk.WriteImage(img, str(path), useCompression=True)


def write_patient(
    patient: PhantomPatient, folder: str | Path, layout: str = "2023", name: str | None = None
) -> Path:
    """Write one simulated patient's images, label maps and Info cfg files to ``folder``
    with CAMUS names (``.nii.gz`` for 2023, ``.mhd``/``.raw`` for 2019); ``name`` (default:
    the folder's name) is the ``patientXXXX`` prefix of the files."""
    layout = check_layout(layout)
    folder = Path(folder)
    name = name or folder.name
    ext = ".nii.gz" if layout == "2023" else ".mhd"
    for view, pv in patient.views.items():
        for phase in PHASES:
            _write_sitk(pv.images[phase], pv.spacing, folder / f"{name}_{view}_{phase}{ext}")
            _write_sitk(pv.labels[phase], pv.spacing, folder / f"{name}_{view}_{phase}_gt{ext}")
        write_text_atomic(folder / f"Info_{view}.cfg", _cfg_text(patient, view, layout))
    return folder


def _marker(seed: int, number: int, layout: str) -> dict:
    """What a patient folder of the tree holds: phantom patient ``number`` of ``seed``."""
    return {"version": PHANTOM_VERSION, "seed": seed, "layout": layout, "number": number}


def _write_one(seed: int, number: int, folder: str, layout: str) -> int:
    """Simulate and write one patient into a hidden folder, with its marker file, then rename
    it into place, so a patient folder is always complete."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_patient(simulate_patient(seed, number), tmp, layout, name=folder.name)
    write_json_atomic(tmp / PATIENT_MARKER, _marker(seed, number, layout))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return number


def _up_to_date(folder: Path, layout: str, marker: dict) -> bool:
    """Whether ``folder`` holds the patient ``marker`` names, with all its files. A folder
    without a marker, or with another patient's (the 2019 folder names depend on the split
    sizes, so another number of patients moves patients), is not."""
    try:
        if json.loads((folder / PATIENT_MARKER).read_text()) != marker:
            return False
    except (OSError, ValueError):
        return False
    ext = ".nii.gz" if layout == "2023" else ".mhd"
    names = [f"{folder.name}_{v}_{p}{s}{ext}" for v in VIEWS for p in PHASES
             for s in ("", "_gt")] + [f"Info_{v}.cfg" for v in VIEWS]  # fmt: skip
    return all((folder / n).is_file() for n in names)


def write_phantom(
    root: str | Path,
    n_patients: int = 20,
    seed: int = 0,
    layout: str = "2023",
    workers: int | None = None,
) -> Path:
    """Write a CAMUS-layout tree of ``n_patients`` phantom patients under ``root``.

    ``layout="2023"``: ``database_nifti/patientXXXX/*.nii.gz`` and
    ``database_split/subgroup_{training,validation,testing}.txt`` (~70/10/20 %);
    ``layout="2019"``: ``training/`` and ``testing/`` with ``.mhd``/``.raw`` files (see
    ``patient_splits`` for the numbering). A ``phantom.json`` records seed, layout, version
    and number of patients, and each patient folder a ``.phantom_patient.json`` (which
    phantom patient it holds, seed, layout, version). A second call skips the folders whose
    marker matches (an interrupted call resumes) and rewrites the others: another seed or
    layout rewrites the tree; another number of patients rewrites the 2019 folders whose
    patient moved (their names follow the split sizes) and the 2023 split files, and
    removes folders no longer part of the tree, so the result equals a fresh tree.
    A non-empty folder that is not a phantom tree is refused (it could be real data).
    ``workers`` processes share the patients (default ``min(4, cpus)`` from 8 patients to
    write on, else this process; 0 or 1: this process). Returns ``root``.
    """
    from tqdm.auto import tqdm

    from echo_vlsm.parallel import process_pool

    root = Path(root)
    layout = check_layout(layout)
    if isinstance(n_patients, bool) or int(n_patients) != n_patients or n_patients < 1:
        raise ValueError(f"n_patients must be a whole number >= 1, got {n_patients!r}")
    n_patients, seed = int(n_patients), int(seed)
    want = {"version": PHANTOM_VERSION, "seed": seed, "layout": layout}
    manifest, partial = root / MANIFEST, root / PARTIAL
    if root.exists() and any(root.iterdir()):
        mine = manifest if manifest.is_file() else partial  # partial: an interrupted call
        if not mine.is_file():
            raise FileExistsError(
                f"{root}: folder is not empty and holds no {MANIFEST}; write the phantom "
                "into an empty or new folder (it will not overwrite other data)"
            )
        try:
            have = json.loads(mine.read_text())
        except (OSError, ValueError):
            have = {}
        if {k: have.get(k) for k in want} != want:
            for sub in ("database_nifti", "database_split", "training", "testing"):
                shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    plan = patient_splits(n_patients, layout)
    keep = {folder for _, _, folder in plan}
    for group in ("database_nifti", "training", "testing"):  # patients of a larger tree
        for p in sorted((root / group).glob("patient*")) if (root / group).is_dir() else []:
            if f"{group}/{p.name}" not in keep:
                shutil.rmtree(p)
        for p in (root / group).glob(".patient*.tmp") if (root / group).is_dir() else []:
            shutil.rmtree(p, ignore_errors=True)  # left by an interrupted call
    manifest.unlink(missing_ok=True)  # present again only when the tree is complete
    manifest_text = json.dumps({**want, "n_patients": n_patients}, indent=2) + "\n"
    write_text_atomic(partial, manifest_text)  # marks the folder as ours meanwhile

    todo = [(n, str(root / rel)) for n, _, rel in plan
            if not _up_to_date(root / rel, layout, _marker(seed, n, layout))]  # fmt: skip
    if workers is None:  # a pool pays off from a few patients per process on
        workers = min(4, os.cpu_count() or 1) if len(todo) >= 8 else 0
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="phantom",
               unit="patient", disable=None)  # fmt: skip
    try:
        if workers <= 1 or len(todo) <= 1:
            for number, folder in todo:
                _write_one(seed, number, folder, layout)
                bar.update()
        else:
            with process_pool(min(workers, len(todo))) as pool:
                futures = [pool.submit(_write_one, seed, n, f, layout) for n, f in todo]
                try:
                    for fut in futures:
                        fut.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()

    if layout == "2023":
        from echo_vlsm.data.camus import SPLIT_FILES_2023

        for split, fname in SPLIT_FILES_2023.items():
            names = [Path(rel).name for _, s, rel in plan if s == split]
            write_text_atomic(root / "database_split" / fname, "".join(n + "\n" for n in names))
    write_text_atomic(manifest, manifest_text)
    partial.unlink(missing_ok=True)
    return root
