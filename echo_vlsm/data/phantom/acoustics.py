"""The phantom's acoustics: a simplified pulse-echo simulation of one B-mode frame.

Computed on the scan lines (depth x angle), then scan-converted to the Cartesian fan:

1. ``_reflectivity``: tissue classes (``anatomy``) -> mean scattering amplitude; blood low,
   myocardium high and angle-dependent (specular walls), other tissue medium, with slow
   heterogeneity; image quality (Good / Medium / Poor) sets clutter haze, wall dropout, rib
   shadows and electronic noise.
2. ``_pulse_echo``: random scatterers (dense, Gaussian) weighted by the reflectivity,
   convolved with a point-spread function (a Gaussian across the beam, a Gaussian-modulated
   cosine along depth, RF 2.5-3.5 MHz), demodulated to the echo envelope; depth
   attenuation, receiver noise and time-gain compensation.
3. ``_log_compress``: the envelope in dB to 8 bit.
4. ``_scan_convert``: to the Cartesian fan (``cv2.remap``), apex at the top, zero outside.

What belongs to the acquisition (probe, settings, acoustic window, the tissue around the
heart: ``_Acquisition``) is drawn from the view's random stream, shared by its ED and ES
frames; the heart's border roughness, the scatterers and the noise from the frame's stream.

Examples::

    >>> from echo_vlsm.structures import QUALITIES
    >>> sorted(_QUALITY) == sorted(QUALITIES)
    True
    >>> float(_REFLECTIVITY[_MYO])  # myocardium is the unit of scattering amplitude
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft as sfft
from scipy.ndimage import gaussian_filter

from echo_vlsm.data.phantom.anatomy import (
    _LA,
    _LV,
    _MYO,
    _RBLOOD,
    _VESSEL,
    _anatomy,
    _anatomy_grid,
    _labels_of,
)

SOUND_SPEED = 1.54  # mm / us
# Mean scattering amplitude per tissue class (myocardium = 1).
_REFLECTIVITY = np.array([0.3, 0.02, 1.0, 0.02, 0.02, 0.8, 1.9, 1.5, 0.02, 0.7], np.float32)
# Per quality: cavity haze, near-field clutter, specular wall dependence, dropout, receiver
# noise (snr: dB of the mean echo over the noise at the deepest point, before the time-gain
# compensation), probability of a rib shadow.
_QUALITY = {
    "Good": dict(haze=0.03, near=0.25, specular=0.35, dropout=0.15, snr=16.0, shadow=0.0),
    "Medium": dict(haze=0.06, near=0.45, specular=0.5, dropout=0.35, snr=12.0, shadow=0.25),
    "Poor": dict(haze=0.11, near=0.7, specular=0.65, dropout=0.6, snr=7.0, shadow=0.6),
}


def _smooth_noise(rng, shape, sigma):
    """Zero-mean, unit-variance Gaussian random field of ``shape`` with correlation length
    ``sigma`` (pixels per axis), drawn on a coarser grid and interpolated (fast)."""
    step = [max(1, int(s // 2)) for s in sigma]
    small = [int(math.ceil(n / k)) + 1 for n, k in zip(shape, step)]
    n = rng.standard_normal(small, dtype=np.float32)
    n = gaussian_filter(n, [s / k for s, k in zip(sigma, step)], mode="wrap")
    if step != [1, 1]:
        n = cv2.resize(n, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return n / (n.std() + 1e-8)


# --------------------------------------------------------------------------- grids and draws


@dataclass(frozen=True, eq=False)
class _Polar:
    """The coarse polar grid of the anatomy on the scan lines (0.35 mm x one line)."""

    R: float  # depth simulated, mm (a little beyond the fan's)
    alpha: float  # half-angle of the fan, radians
    n_t: int  # scan lines
    n_rc: int  # samples per line
    rc: np.ndarray  # (n_rc,) their depth, mm
    th: np.ndarray  # (n_t,) angle of each line
    xx: np.ndarray  # (n_rc, n_t) position in mm: across ...
    zz: np.ndarray  # ... and down from the fan's apex


def _polar_grid(g: dict) -> _Polar:
    R, alpha = g["depth"] * 1.02, g["half_angle"]
    n_t = int(np.clip(np.round(2 * alpha / math.radians(0.35)), 160, 260))  # scan lines
    # coarse polar grid for the anatomy (0.35 mm x one line), refined by interpolation
    n_rc = int(math.ceil(R / 0.35))
    rc = (np.arange(n_rc, dtype=np.float32) + 0.5) * np.float32(R / n_rc)
    th = np.linspace(-alpha, alpha, n_t, dtype=np.float32)
    xx = rc[:, None] * np.sin(th)[None, :]
    zz = rc[:, None] * np.cos(th)[None, :]
    return _Polar(R=R, alpha=alpha, n_t=n_t, n_rc=n_rc, rc=rc, th=th, xx=xx, zz=zz)


@dataclass(frozen=True, eq=False)
class _Acquisition:
    """What one view's ED and ES frames share: the probe's settings, the acoustic window and
    the tissue around the heart (fields on the polar grid, scalars)."""

    hetero: np.ndarray  # tissue heterogeneity
    dropout: np.ndarray  # wall dropout pattern
    haze_field: np.ndarray  # haze in the blood pools
    near_field: np.ndarray  # near-field reverberation
    near_depth: float  # depth scale of the near-field clutter, mm
    layer_period: float  # chest-wall layers: period (mm), phase, depth (mm)
    layer_phase: float
    layer_depth: float
    shadow_u: float  # a rib shadow where below the quality's probability
    shadow_c: float  # its angle (x the half-angle), width (x the half-angle), depth (mm)
    shadow_w: float
    shadow_z: float
    beam: float  # lateral beam width, in scan lines
    sigma_ax_rel: float  # pulse length / wavelength
    tgc_knots: np.ndarray  # (8,) TGC slider offsets, dB

    @classmethod
    def draw(cls, seed: int, polar: _Polar) -> _Acquisition:
        """Draw a view's acquisition from its own stream (the order of the draws is fixed)."""
        vrng = np.random.default_rng(seed)
        shape = (polar.n_rc, polar.n_t)
        hetero = _smooth_noise(vrng, shape, (10, 6))
        dropout = _smooth_noise(vrng, shape, (25, 12))
        haze_field = _smooth_noise(vrng, shape, (20, 10))
        near_field = _smooth_noise(vrng, shape, (4, 10))
        near_depth = vrng.uniform(8.0, 18.0)
        layer_period, layer_phase, layer_depth = vrng.uniform([1.5, 0, 10], [3, 2 * np.pi, 22])
        shadow_u = vrng.random()
        shadow_c, shadow_w, shadow_z = vrng.uniform([-0.8, 0.08, 8], [0.8, 0.2, 20])
        beam = vrng.uniform(0.55, 0.8) * math.radians(1.0) / (2 * polar.alpha / (polar.n_t - 1))
        sigma_ax_rel = vrng.uniform(0.35, 0.5)
        tgc_knots = vrng.uniform(-2.0, 2.0, 8)
        return cls(hetero, dropout, haze_field, near_field, near_depth, layer_period,
                   layer_phase, layer_depth, shadow_u, shadow_c, shadow_w, shadow_z, beam,
                   sigma_ax_rel, tgc_knots)


def _acquisition(g: dict, polar: _Polar) -> _Acquisition:
    """The view's acquisition, drawn once per view (``g`` is shared by its frames)."""
    if "_acquisition" not in g:
        g["_acquisition"] = _Acquisition.draw(g["texture_seed"], polar)
    return g["_acquisition"]


# --------------------------------------------------------------------------- reflectivity


def _reflectivity(polar: _Polar, f: dict, view: str, q: dict, acq: _Acquisition, rng):
    """Tissue classes and the mean scattering amplitude on the scan lines."""
    jitter = 0.035 * _smooth_noise(rng, (polar.n_rc, polar.n_t), (6, 4))  # trabeculae, border
    cls = _anatomy(polar.xx, polar.zz, f, view, jitter=jitter, echo=True)
    refl = _REFLECTIVITY[cls] * np.exp(0.35 * acq.hetero)  # slow heterogeneity
    refl = _specular_walls(refl, cls, polar, q, acq)
    return cls, _clutter(refl, cls, polar, q, acq)


def _specular_walls(refl, cls, polar: _Polar, q: dict, acq: _Acquisition):
    """A wall along the beam (the lateral walls) echoes less; patchy wall dropout."""
    myo = cls == _MYO
    if not myo.any():
        return refl
    rc, alpha, n_t = polar.rc, polar.alpha, polar.n_t
    m = gaussian_filter(myo.astype(np.float32) + (cls == _LV) * 2.0, (5, 3))
    gr, gt = np.gradient(m)
    gt = gt / (rc[:, None] * (2 * alpha / max(n_t - 1, 1)) / (polar.R / polar.n_rc))  # per mm
    cos2 = gr**2 / (gr**2 + gt**2 + 1e-12)
    spec = (1 - q["specular"]) + q["specular"] * cos2
    drop = np.clip(1.0 + 0.8 * acq.dropout, 0, 1)
    drop = 1.0 - q["dropout"] * (1.0 - drop)
    return np.where(myo, refl * spec * drop, refl)


def _clutter(refl, cls, polar: _Polar, q: dict, acq: _Acquisition):
    """Haze in the blood pools, reverberation in the near field, chest-wall layers in the
    first ~20 mm, and a rib shadow (a band of lines losing signal with depth)."""
    rc, th, alpha = polar.rc, polar.th, polar.alpha
    blood = np.isin(cls, (_LV, _LA, _RBLOOD, _VESSEL))
    haze = q["haze"] * np.exp(0.5 * acq.haze_field)
    near = q["near"] * np.exp(-rc / acq.near_depth)[:, None] * np.exp(0.5 * acq.near_field)
    refl = np.sqrt(refl**2 + (blood * haze) ** 2 + near**2)
    layers = 0.6 * (1 + np.sin(rc / acq.layer_period + acq.layer_phase))
    refl = refl + (layers * (rc < acq.layer_depth) * 0.4)[:, None]
    if acq.shadow_u < q["shadow"]:
        band = np.exp(-0.5 * ((th - acq.shadow_c * alpha) / (acq.shadow_w * alpha)) ** 2)
        refl = refl * (1 - 0.85 * band[None, :] * (rc[:, None] > acq.shadow_z))
    return refl


# --------------------------------------------------------------------------- pulse-echo


def _pulse_echo(refl, g: dict, polar: _Polar, q: dict, acq: _Acquisition, rng):
    """The echo envelope on the scan lines and its depth step in mm."""
    lam = SOUND_SPEED / g["f0"]  # wavelength, mm
    dr = lam / 7.0  # RF sampling along depth (the echo oscillates at 2 / lambda cycles/mm)
    scat = _scatterers(refl, polar, acq.beam, dr, rng)
    iq, dr_env = _demodulate(scat, lam, dr, lam * acq.sigma_ax_rel)
    return _receive(iq, g, polar, q, acq.tgc_knots, dr_env, rng), dr_env


def _scatterers(refl, polar: _Polar, beam: float, dr: float, rng):
    """Gaussian scatterers x reflectivity on the RF grid, blurred by the lateral beam."""
    n_r, n_t = int(math.ceil(polar.R / dr)), polar.n_t
    refl_f = cv2.resize(refl.astype(np.float32), (n_t, n_r), interpolation=cv2.INTER_LINEAR)
    scat = refl_f * rng.standard_normal((n_r, n_t), dtype=np.float32)
    k = 2 * int(math.ceil(3 * beam)) + 1
    return cv2.GaussianBlur(scat, (k, 1), sigmaX=beam, sigmaY=0.1)  # lateral beam profile


def _demodulate(scat, lam: float, dr: float, sigma_ax: float):
    """The axial PSF and the scanner's quadrature demodulation, in one step: IQ samples.

    The PSF is a Gaussian-modulated cosine, cos(2 pi (2 / lam) z) exp(-z^2 / 2 s^2); in the
    Fourier domain along depth its positive-frequency lobe is a Gaussian at k0 = 2 / lam.
    Keeping only that lobe gives the analytic signal of the RF echo (what a Hilbert
    transform gives), and shifting it by k0 to baseband with fewer samples is the scanner's
    quadrature demodulation; |IQ| is the envelope. Returns the IQ samples and their step."""
    n_r, n_t = scat.shape
    n_fft = sfft.next_fast_len(n_r + int(8 * sigma_ax / dr), real=True)
    spec = sfft.rfft(scat, n=n_fft, axis=0)
    dk = 1.0 / (n_fft * dr)
    k0 = 2.0 / lam
    m = min(n_fft, sfft.next_fast_len(int(math.ceil(n_fft * dr / sigma_ax))))
    j0 = int(round(k0 / dk))
    js = np.arange(max(0, j0 - m // 2), min(spec.shape[0], j0 + (m + 1) // 2))
    lobe = np.exp(-0.5 * ((js * dk - k0) * 2 * np.pi * sigma_ax) ** 2).astype(np.float32)
    iq_spec = np.zeros((m, n_t), np.complex64)
    iq_spec[(js - j0) % m] = spec[js] * lobe[:, None]
    iq = sfft.ifft(iq_spec, axis=0)
    dr_env = n_fft * dr / m
    n_env = int(math.ceil(n_r * dr / dr_env))
    return iq[:n_env], dr_env


def _receive(iq, g: dict, polar: _Polar, q: dict, tgc_knots, dr_env: float, rng):
    """Depth attenuation (round trip), receiver noise, time-gain compensation: the envelope."""
    n_env, n_t = iq.shape
    r = (np.arange(n_env, dtype=np.float32) * np.float32(dr_env))[:, None]
    att_db = g["atten"] * g["f0"] * 2 * r / 10.0
    scale = float(np.sqrt(np.mean(np.abs(iq) ** 2)) + 1e-12)
    iq = iq * (10 ** (-att_db / 20)).astype(np.float32)
    noise = rng.standard_normal((n_env, n_t, 2), dtype=np.float32).view(np.complex64)[..., 0]
    noise_db = float(att_db[-1, 0]) + q["snr"]
    iq = iq + np.float32(scale * 10 ** (-noise_db / 20) / math.sqrt(2)) * noise
    tgc_wiggle = np.interp(r[:, 0], np.linspace(0, polar.R, 8), tgc_knots)
    gain = 10 ** ((g["tgc"] * att_db + tgc_wiggle[:, None]) / 20)
    return np.abs(iq) * gain.astype(np.float32)


def _log_compress(env, g: dict):
    """The envelope in dB and its log compression to 0..255 (float32, on the scan lines)."""
    db = 20 * np.log10(env + 1e-12)
    top = np.percentile(db[::4, :], 99.0) + g["gain"]
    img = np.clip((db - (top - g["dyn_range"])) / g["dyn_range"], 0, 1) ** g["gamma"]
    return db, (img * 255).astype(np.float32)


# --------------------------------------------------------------------------- scan conversion


def _image_grid(g: dict):
    """(X, Z): each pixel's position in mm, across and down from the fan's apex."""
    H, W, sp = g["height"], g["width"], g["spacing"]
    ys = (np.arange(H, dtype=np.float32) - g["apex_row"]) * sp
    xs = (np.arange(W, dtype=np.float32) - g["apex_col"]) * sp
    return np.meshgrid(xs, ys)


def _scan_convert(img, X, Z, g: dict, polar: _Polar, dr_env: float):
    """The scan lines resampled onto the image's pixels: (H, W) uint8, and the fan (bool)."""
    alpha, n_t = polar.alpha, polar.n_t
    rad = np.hypot(X, Z)
    ang = np.arctan2(X, Z)
    sector = (np.abs(ang) <= alpha) & (rad <= g["depth"] * 0.995) & (Z > 0)
    map_r = (rad / dr_env).astype(np.float32)
    map_t = ((ang + alpha) / (2 * alpha) * (n_t - 1)).astype(np.float32)
    bmode = cv2.remap(img, map_t, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    bmode = np.where(sector, np.clip(np.round(bmode), 0, 255), 0).astype(np.uint8)
    return bmode, sector


def _simulate_frame(g: dict, f: dict, view: str, quality: str, rng, stages=None) -> tuple:
    """B-mode frame (H, W) uint8, label map (H, W) uint8, sector mask (H, W) bool; when
    ``stages`` is a dict, the intermediate maps on the scan lines are put in it."""
    q = _QUALITY[quality]
    polar = _polar_grid(g)
    acq = _acquisition(g, polar)
    cls, refl = _reflectivity(polar, f, view, q, acq, rng)
    env, dr_env = _pulse_echo(refl, g, polar, q, acq, rng)
    db, img = _log_compress(env, g)
    if stages is not None:
        stages.update(classes=cls, reflectivity=refl, envelope_db=db, log_compressed=img,
                      depth_mm=polar.R, half_angle=polar.alpha)
    X, Z = _image_grid(g)
    bmode, sector = _scan_convert(img, X, Z, g, polar, dr_env)
    label = _labels_of(_anatomy_grid(X, Z, f, view))
    label[~sector] = 0
    return bmode, label, sector
