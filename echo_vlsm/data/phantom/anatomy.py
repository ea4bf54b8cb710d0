"""The phantom's anatomy: tissue classes at points in mm, and CAMUS label maps from them.

The heart is drawn in a frame aligned with the LV's long axis: ``u`` from the mitral plane
towards the apex, ``v`` across it (+ to the right of the image). Each structure is an
ellipse (with low-order shape harmonics) in that frame, measured by its normalised radius
``rho`` (1 on the border): the LV cavity, its myocardial wall (thicker on one side,
thinner at the apex), the pericardium around it, the LA below the mitral plane; in 4CH the
right ventricle and atrium (blood, unlabelled) beside the septum; sometimes the descending
aorta behind the LA. The echo simulation also draws the mitral leaflets and papillary
muscles, which CAMUS' annotation counts as cavity.

Examples::

    >>> import numpy as np
    >>> _labels_of(np.array([[_TISSUE, _LV, _MYO, _LA, _RBLOOD, _PAPILLARY]], np.uint8))
    array([[0, 1, 2, 3, 0, 0]], dtype=uint8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Tissue classes of the simulation (labels 1..3 are CAMUS' structures; the rest label 0).
_TISSUE, _LV, _MYO, _LA, _RBLOOD, _RWALL, _PERI, _VALVE, _VESSEL, _PAPILLARY = range(10)


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



@dataclass(frozen=True)
class _Chambers:
    """Sizes (mm) of one frame's LV and LA in the long-axis frame."""

    L: float  # mitral plane -> endocardial apex
    b: float  # half-width of the cavity
    d: float  # the cavity ellipse's centre below the mitral plane
    a: float  # the cavity ellipse's semi-axis along the long axis
    w: float  # wall thickness
    ann: float  # half-width of the mitral annulus
    la_a: float  # the LA's semi-axes and centre (u) of its ellipse
    la_b: float
    la_cu: float


def _chambers(f: dict) -> _Chambers:
    L, b = f["lv_len"], f["lv_halfwidth"]
    d = f["lv_base"] * L
    a = L + d
    la_a, la_b = f["la_len"] / 2, f["la_halfwidth"]
    ann = b * math.sqrt(max(1e-6, 1 - (d / a) ** 2))  # half-width of the annulus
    # the LA's top spans the annulus, which narrows far less than the cavity in systole
    la_b = max(la_b, f["ann_ed"] / math.sqrt(1 - 0.8**2) * 1.05)
    return _Chambers(L=L, b=b, d=d, a=a, w=f["wall"], ann=ann, la_a=la_a, la_b=la_b,
                     la_cu=-la_a * 0.8)


def _long_axis_frame(x: np.ndarray, z: np.ndarray, f: dict) -> tuple[np.ndarray, np.ndarray]:
    """(u, v): along the long axis from the mitral plane (+ to the apex), and across it."""
    ax = f["axis"]
    ev = np.array([-ax[1], ax[0]])  # across the long axis, pointing to the right
    dx = x - np.float32(f["mitral"][0])
    dz = z - np.float32(f["mitral"][1])
    u = dx * np.float32(ax[0]) + dz * np.float32(ax[1])  # along the axis, + to the apex
    v = dx * np.float32(ev[0]) + dz * np.float32(ev[1])
    return u, v


def _lv_radii(u, v, f: dict, c: _Chambers, j):
    """Normalised radii of the LV cavity, the outer border of its wall and the pericardium."""
    b, d, a, w = c.b, c.d, c.a, c.w
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
    return rho_lv, rho_out, rho_peri


def _la_radius(u, v, f: dict, c: _Chambers, j):
    """Normalised radius of the LA below the mitral plane, its top as wide as the annulus."""
    v_la = v - np.float32(f["la_shift"] * c.ann)
    du_la = (u - np.float32(c.la_cu)) / np.float32(c.la_a)
    dv_la = v_la / np.float32(c.la_b)
    rho_la = np.sqrt(du_la * du_la + dv_la * dv_la)
    # shape harmonics fade out towards the mitral plane, where the LA spans the annulus
    fade = np.clip(u / np.float32(c.la_cu), 0.0, 1.0)
    return rho_la / (1.0 + fade * _harmonics(du_la, dv_la, rho_la, f["la_harm"])) + j


def _paint_right_heart(cls, u, v, f: dict, c: _Chambers, j, above) -> None:
    """4CH: the right ventricle and atrium (walls, then blood) on the left of the image."""
    below = ~above
    sep = f["wall_lr"][0] * c.w  # the septum between the ventricles
    rv_b = c.b * f["rv_width"]
    rv_cv = -(c.b + sep + rv_b * 0.95)
    rv_a = c.a * f["rv_len"]
    rho_rv = _ellipse_rho(u, v - np.float32(rv_cv), -c.d, rv_a, rv_b) + j
    rho_rvw = _ellipse_rho(u, v - np.float32(rv_cv), -c.d, rv_a + 4, rv_b + 4)
    ra_a = c.la_a * f["ra_len"]
    ra_b = rv_b * 0.95
    ra_cv = -(c.la_b * 0.9 + 3.0 + ra_b) + f["la_shift"] * c.ann
    ra_cu = c.la_cu * f["ra_len"]
    rho_ra = _ellipse_rho(u, v - np.float32(ra_cv), ra_cu, ra_a, ra_b) + j
    rho_raw = _ellipse_rho(u, v - np.float32(ra_cv), ra_cu, ra_a + 3, ra_b + 3)
    cls[(rho_rvw <= 1) & above] = _RWALL
    cls[(rho_raw <= 1) & below] = _RWALL
    cls[(rho_rv <= 1) & above] = _RBLOOD
    cls[(rho_ra <= 1) & below] = _RBLOOD


def _paint_aorta(cls, x, z, f: dict) -> None:
    """The descending aorta: a round blood pool (with a wall) behind the LA."""
    R = f["depth"]
    cx = f["mitral"][0] + f["vessel_pos"][0] * R
    cz = f["mitral"][1] + f["la_len"] + f["vessel_pos"][1] * R
    r2 = (x - np.float32(cx)) ** 2 + (z - np.float32(cz)) ** 2
    cls[r2 <= (0.045 * R + 2.5) ** 2] = _RWALL
    cls[r2 <= (0.045 * R) ** 2] = _VESSEL


def _paint_papillary(cls, u, v, f: dict, c: _Chambers) -> None:
    """Papillary muscles: small ellipses inside the cavity, near the free walls."""
    for pu, pv, pa, pb in f["papillary"]:
        pu_mm, pv_mm = pu * c.L, pv * c.b
        inside = ((u - np.float32(pu_mm)) / np.float32(pa)) ** 2 + (
            (v - np.float32(pv_mm)) / np.float32(pb)
        ) ** 2 <= 1
        cls[inside & (cls == _LV)] = _PAPILLARY


def _paint_leaflets(cls, u, v, f: dict, c: _Chambers) -> None:
    """Mitral leaflets: segments hinged at the annulus, into the LV, open at early ED."""
    tip = f["leaflet"] * c.ann
    open_ = f.get("leaflet_open", 0.0)
    near = np.abs(u) <= tip + 2.0
    uu, vv = u[near], v[near]
    hit = np.zeros(uu.shape, bool)
    for sgn in (-1.0, 1.0):
        dirv = np.array([open_ + 0.15, -sgn * (1.0 - open_)])
        dirv = dirv / np.hypot(*dirv)
        pv = vv - np.float32(sgn * c.ann)
        t = np.clip(uu * np.float32(dirv[0]) + pv * np.float32(dirv[1]), 0.0, tip)
        dist = np.hypot(uu - t * np.float32(dirv[0]), pv - t * np.float32(dirv[1]))
        hit |= dist <= 1.1
    sub = cls[near]
    sub[hit] = _VALVE
    cls[near] = sub


def _anatomy(x: np.ndarray, z: np.ndarray, f: dict, view: str, jitter=None,
             echo: bool = False) -> np.ndarray:
    """Tissue class (``_TISSUE`` .. ``_PAPILLARY``) at points (x, z) in mm of one frame.

    For the echo simulation (``echo=True``) ``jitter`` (same shape, in units of the
    normalised radius) roughens the borders and the mitral leaflets and papillary muscles
    are drawn; the label maps are drawn without them (the muscles belong to the cavity, as
    in CAMUS' annotation). Later structures are painted over earlier ones."""
    u, v = _long_axis_frame(x, z, f)
    j = np.float32(0.0) if jitter is None else jitter
    c = _chambers(f)
    cls = np.full(x.shape, _TISSUE, np.uint8)
    rho_lv, rho_out, rho_peri = _lv_radii(u, v, f, c, j)
    rho_la = _la_radius(u, v, f, c, j)
    above = u >= 0  # the LV side of the mitral plane
    if view == "4CH":  # right heart on the left of the image, septum between
        _paint_right_heart(cls, u, v, f, c, j, above)
    if f["vessel"]:
        _paint_aorta(cls, x, z, f)
    cls[(rho_peri <= 1) & (rho_out > 1) & above] = _PERI
    cls[(rho_out <= 1) & above] = _MYO
    cls[(rho_la <= 1) & ~above] = _LA
    cls[(rho_lv <= 1) & above] = _LV
    if echo and f["papillary"] is not None:
        _paint_papillary(cls, u, v, f, c)
    if echo:
        _paint_leaflets(cls, u, v, f, c)
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
