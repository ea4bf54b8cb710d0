"""The phantom in EchoNet-Dynamic's layout: one-cycle videos with LV tracings and EF.

``write_echonet_phantom`` (also ``write_phantom(..., layout="echonet")``) writes what
``echo_vlsm.data.echonet.read_echonet`` reads (Ouyang et al., Nature 2020)::

    FileList.csv          FileName (no .avi), EF, ESV, EDV, FrameHeight, FrameWidth, FPS,
                          NumberOfFrames, Split (TRAIN / VAL / TEST)
    VolumeTracings.csv    FileName (with .avi), X1, Y1, X2, Y2, Frame: per traced frame the
                          long axis (apex, then the mitral plane's middle), then 20 chords
    Videos/<name>.avi     112 x 112, grey in three channels, FFV1 (lossless), 50 fps

Each video is one cardiac cycle of a phantom heart in apical four-chamber view, starting at a
random point of the cycle. The anatomy (``anatomy``) is drawn at end-diastole and at
end-systole and interpolated in between (systole: a half cosine from ED to ES; diastole: back
to ED), each frame simulated by the phantom's pulse-echo chain (``acoustics``) on a coarser
grid suited to 112 pixels, with a baseband speckle model whose scatterers decorrelate from
frame to frame (an AR(1) process in time). The acquisition differs from the CAMUS-layout
phantom's: shallower depth (135-170 mm vs 140-185), wider sector (40-45 vs 33-40 degrees
half-angle), lower frequency (1.7-2.4 vs 2.5-3.5 MHz), more gain (+2..+7 vs -4..+3 dB), a
narrower dynamic range (36-46 vs 42-54 dB) and 5 dB more receiver noise, on hearts drawn from
their own random streams.

The tracings are computed from the phantom's LV label (on a grid 4x finer than the video):
the long axis from the apex (the cavity point farthest from the mitral plane's middle) to the
middle of the mitral plane; 20 chords across it, evenly spaced from half a pixel above the
mitral plane to half a pixel below the apex. EDV, ESV (mL) and EF in the FileList are the
single-plane discs of these tracings (``echonet.disc_volume``) at the video's pixel size.

Everything depends only on ``(seed, video number)``; a second call keeps the videos already
written for the same seed (a hidden ``.phantom/<name>.json`` holds each video's rows).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from echo_vlsm.data.echonet import FILELIST, TRACINGS, VIDEOS, disc_volume
from echo_vlsm.data.phantom.acoustics import (
    _QUALITY,
    SOUND_SPEED,
    _Acquisition,
    _log_compress,
    _Polar,
    _receive,
    _reflectivity,
    _scan_convert,
)
from echo_vlsm.data.phantom.anatomy import _LV, _anatomy_grid, _frame_geometry
from echo_vlsm.data.phantom.patients import _draw_patient, _draw_view, _fit_in_fan, _rng
from echo_vlsm.io import write_json_atomic, write_text_atomic
from echo_vlsm.parallel import run_jobs

__all__ = ["ECHONET_LAYOUT", "ECHONET_VERSION", "FPS", "N_CHORDS", "SIZE", "echonet_splits",
           "simulate_video", "trace_lv", "video_name", "write_echonet_phantom",
           "write_video"]

ECHONET_LAYOUT = "echonet"
ECHONET_VERSION = 1
MANIFEST = "phantom.json"
ROWS_DIR = ".phantom"  # <name>.json per video: its FileList row and tracing rows
SIZE = 112
FPS = 50.0
N_CHORDS = 20
_FINE = 4  # label grid for the tracings: 4x finer than the video
_SPLIT_NAMES = {"train": "TRAIN", "val": "VAL", "test": "TEST"}
# Keys of the frame geometry that move between ED and ES (interpolated).
_MOVING = ("lv_len", "lv_halfwidth", "wall", "la_len", "la_halfwidth", "leaflet_open", "mitral")


def video_name(number: int) -> str:
    """The FileName of phantom video ``number`` (EchoNet's names are 0X + 16 hex digits)."""
    return f"0XPHANTOM{number:09d}"


def echonet_splits(n_videos: int, sizes: Mapping[str, int] | None = None) -> list[str]:
    """The split of each video, in order: validation first, then training, test last.

    ``sizes`` gives the videos per split (``{"train": 2, "val": 2, "test": 20}``, summing to
    ``n_videos``); by default they follow EchoNet-Dynamic (7465 / 1288 / 1277, ~74 / 13 /
    13 %), with at least one validation and one test video from 3 videos on.

    >>> from collections import Counter
    >>> Counter(echonet_splits(8))
    Counter({'train': 6, 'val': 1, 'test': 1})
    """
    n = int(n_videos)
    if isinstance(n_videos, bool) or n != n_videos or n < 1:
        raise ValueError(f"n_videos must be a whole number >= 1, got {n_videos!r}")
    if sizes is None:
        val = test = 0 if n < 3 else max(1, round(0.128 * n))
        sizes = {"train": n - val - test, "val": val, "test": test}
    if not isinstance(sizes, Mapping) or set(sizes) - set(_SPLIT_NAMES):
        raise ValueError(f"splits must map train/val/test to numbers of videos, got {sizes!r}")
    count = {k: sizes.get(k, 0) for k in _SPLIT_NAMES}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in count.values()):
        raise ValueError(f"splits must hold whole numbers >= 0, got {sizes!r}")
    if sum(count.values()) != n:
        raise ValueError(f"splits {count} add up to {sum(count.values())} videos, not {n}")
    return ["val"] * count["val"] + ["train"] * count["train"] + ["test"] * count["test"]


# --------------------------------------------------------------------------- drawing


def _draw(seed: int, number: int) -> tuple[dict, dict, np.random.Generator]:
    """Patient, 4CH view with EchoNet's acquisition, and the video's own stream."""
    p = _draw_patient(_rng(seed, number, 10))
    p["ef"] = _rng(seed, number, 11).uniform(0.2, 0.75)  # wider than CAMUS' 30-70 %
    g = _draw_view(_rng(seed, number, 12), "4CH", p)
    rng = _rng(seed, number, 13)
    depth = rng.uniform(135.0, 170.0)
    g.update(height=SIZE, width=SIZE, depth=depth, spacing=depth / SIZE, apex_row=0.0,
             apex_col=(SIZE - 1) / 2 + rng.uniform(-1.5, 1.5))
    g["half_angle"] = math.radians(rng.uniform(40.0, 45.0))
    g["f0"] = rng.uniform(1.7, 2.4)
    g["gain"] = rng.uniform(2.0, 7.0)
    g["dyn_range"] = rng.uniform(36.0, 46.0)
    mitral_z = g["apex"][1] + g["lv_len"] * abs(g["axis"][1])
    g["la_len"] = max(15.0, min(g["la_len"], 0.93 * depth - mitral_z))  # the LA in the fan
    _fit_in_fan(g)
    return p, g, rng


def _cycle(rng: np.random.Generator, fps: float) -> tuple[np.ndarray, int, int]:
    """Contraction per frame (0 at ED, 1 at ES) over one cycle from a random start, and the
    ED and ES frame numbers."""
    period = 60.0 / rng.uniform(55.0, 95.0)  # s, heart rate 55-95 / min
    n = int(round(period * fps))
    n_sys = int(round(rng.uniform(0.28, 0.36) * fps))
    start = int(rng.integers(n))
    phase = (np.arange(n) + start) % n  # frames since ED
    s = np.where(phase <= n_sys, 0.5 - 0.5 * np.cos(np.pi * phase / n_sys),
                 0.5 + 0.5 * np.cos(np.pi * (phase - n_sys) / (n - n_sys)))
    return s, int(np.flatnonzero(phase == 0)[0]), int(np.flatnonzero(phase == n_sys)[0])


def _between(f_ed: dict, f_es: dict, s: float) -> dict:
    f = dict(f_ed)
    for key in _MOVING:
        f[key] = (1 - s) * np.asarray(f_ed[key]) + s * np.asarray(f_es[key])
    return f


def _polar(g: dict, step: float, n_t: int) -> _Polar:
    """Scan lines for a 112-pixel video: ``n_t`` lines, a sample every ``step`` mm."""
    R, alpha = g["depth"] * 1.02, g["half_angle"]
    n_rc = int(math.ceil(R / step))
    rc = (np.arange(n_rc, dtype=np.float32) + 0.5) * np.float32(R / n_rc)
    th = np.linspace(-alpha, alpha, n_t, dtype=np.float32)
    return _Polar(R=R, alpha=alpha, n_t=n_t, n_rc=n_rc, rc=rc, th=th,
                  xx=rc[:, None] * np.sin(th)[None, :], zz=rc[:, None] * np.cos(th)[None, :])


def _grid(g: dict, fine: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(X, Z) in mm of each pixel centre, on the video grid or one ``fine`` times finer."""
    c = (np.arange(SIZE * fine, dtype=np.float32) + 0.5) / fine - 0.5
    xs = (c - np.float32(g["apex_col"])) * np.float32(g["spacing"])
    zs = (c - np.float32(g["apex_row"])) * np.float32(g["spacing"])
    return np.meshgrid(xs, zs)


# --------------------------------------------------------------------------- simulation


def _speckle(shape: tuple[int, int], rho: float, prev: np.ndarray | None, rng) -> np.ndarray:
    """Complex Gaussian scatterers, AR(1) in time: ``rho`` x the last frame's + fresh ones."""
    fresh = rng.standard_normal((*shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    if prev is None:
        return fresh
    return np.complex64(rho) * prev + np.complex64(math.sqrt(1 - rho * rho)) * fresh


def _frame(g: dict, f: dict, q: dict, acq: _Acquisition, grids: tuple[_Polar, _Polar],
           scat: np.ndarray, jitter_seed: int, rng, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """One B-mode frame (112 x 112 uint8): reflectivity of the anatomy (on the coarser of
    the two ``grids``), baseband speckle on the finer one blurred by the pulse (axial) and
    the beam (lateral), attenuation, noise and TGC, log compression, scan conversion."""
    coarse, polar = grids
    _, refl = _reflectivity(coarse, f, "4CH", q, acq, np.random.default_rng(jitter_seed))
    refl = cv2.resize(refl.astype(np.float32), (polar.n_t, polar.n_rc),
                      interpolation=cv2.INTER_LINEAR)
    dr = polar.R / polar.n_rc
    sigma_ax = max(0.5, SOUND_SPEED / g["f0"] * acq.sigma_ax_rel / dr)  # samples
    beam = acq.beam * polar.n_t / coarse.n_t  # in lines of the finer grid
    iq = refl * scat
    k_ax, k_lat = 2 * int(math.ceil(3 * sigma_ax)) + 1, 2 * int(math.ceil(3 * beam)) + 1
    re = cv2.GaussianBlur(np.ascontiguousarray(iq.real), (k_lat, k_ax), beam, None, sigma_ax)
    im = cv2.GaussianBlur(np.ascontiguousarray(iq.imag), (k_lat, k_ax), beam, None, sigma_ax)
    env = _receive(re + 1j * im, g, polar, q, acq.tgc_knots, dr, rng)
    _, img = _log_compress(env, g)
    bmode, _ = _scan_convert(img, X, Z, g, polar, dr)
    return bmode


def _lv_mask(g: dict, f: dict) -> np.ndarray:
    """The LV label inside the fan on the fine grid, (448, 448) bool."""
    X, Z = _grid(g, _FINE)
    inside = (np.abs(np.arctan2(X, Z)) <= g["half_angle"]) & (np.hypot(X, Z) <= g["depth"])
    return (_anatomy_grid(X, Z, f, "4CH") == _LV) & inside


def simulate_video(seed: int, number: int) -> dict:
    """Phantom video ``number`` of ``seed``: ``frames`` (T, 112, 112) uint8, ``ed``/``es``
    frame numbers, their tracings (``trace_lv``), ``spacing`` (mm), ``quality``."""
    p, g, rng = _draw(seed, number)
    s, k_ed, k_es = _cycle(rng, FPS)
    f_ed = _frame_geometry(g, "ED", p["ef"], _rng(seed, number, 14))
    f_es = _frame_geometry(g, "ES", p["ef"], _rng(seed, number, 15))
    q = dict(_QUALITY[p["quality"]["4CH"]])
    q["snr"] -= 5.0
    grids = (_polar(g, 0.8, 112), _polar(g, 0.5, 128))  # anatomy, speckle
    polar = grids[1]
    acq = _Acquisition.draw(g["texture_seed"], grids[0])
    X, Z = _grid(g)
    rho, jitter_seed = rng.uniform(0.5, 0.75), int(rng.integers(2**63))
    frames, scat = [], None
    for si in s:
        scat = _speckle((polar.n_rc, polar.n_t), rho, scat, rng)
        frames.append(_frame(g, _between(f_ed, f_es, float(si)), q, acq, grids, scat,
                             jitter_seed, rng, X, Z))
    return dict(frames=np.stack(frames), ed=k_ed, es=k_es, spacing=g["spacing"],
                quality=p["quality"]["4CH"],
                traces={"ED": trace_lv(_lv_mask(g, f_ed), _FINE),
                        "ES": trace_lv(_lv_mask(g, f_es), _FINE)})


# --------------------------------------------------------------------------- tracings


def _extent(mask: np.ndarray, p: np.ndarray, n: np.ndarray, reach: float) -> tuple:
    """Where the line ``p + s n`` enters and leaves the mask's run nearest to ``p``."""
    s = np.arange(-reach, reach + 0.25, 0.25)
    pts = np.rint(p[None] + s[:, None] * n[None]).astype(int)
    ok = (pts >= 0).all(1) & (pts[:, 0] < mask.shape[1]) & (pts[:, 1] < mask.shape[0])
    hit = np.zeros(len(s), bool)
    hit[ok] = mask[pts[ok, 1], pts[ok, 0]]
    if not hit.any():
        return p, p
    i = int(np.flatnonzero(hit)[np.argmin(np.abs(s[hit]))])
    lo, hi = i, i
    while lo > 0 and hit[lo - 1]:
        lo -= 1
    while hi < len(s) - 1 and hit[hi + 1]:
        hi += 1
    return p + (s[lo] - 0.125) * n, p + (s[hi] + 0.125) * n


def trace_lv(mask: np.ndarray, fine: int = 1, n_chords: int = N_CHORDS
             ) -> tuple[np.ndarray, np.ndarray]:
    """EchoNet-style tracing of an LV mask (apex up): the long axis ``(x1, y1, x2, y2)``
    from the apex to the middle of the mitral plane, and ``n_chords`` chords across it
    ``(n, 4)``, first ends on the image's left; in pixels of a grid ``fine`` times coarser
    than ``mask``.

    The mitral plane is the mask's far end along its principal axis; the apex the middle of
    the mask points farthest (within half a coarse pixel) from the plane's middle; the
    chords are evenly spaced from half a (coarse) pixel above the plane to half a pixel
    below the apex.
    """
    ys, xs = np.nonzero(mask)
    if ys.size < 10:
        raise ValueError(f"an LV mask of {ys.size} pixels cannot be traced")
    pts = np.stack([xs, ys], 1).astype(np.float64)
    centre = pts.mean(0)
    e = np.linalg.svd(pts - centre, full_matrices=False)[2][0]
    e = e if e[1] > 0 else -e  # towards the mitral plane (down)
    proj = (pts - centre) @ e
    slab = proj >= proj.max() - 1.5 * fine
    # the slab's middle, moved to the outer edge of the mask's last pixels
    base = pts[slab].mean(0) + (proj.max() + 0.5 - proj[slab].mean()) * e
    dist = np.sqrt(((pts - base) ** 2).sum(1))
    apex = pts[dist >= dist.max() - 0.5 * fine].mean(0)  # a blunt apex: its middle
    length = float(np.hypot(*(apex - base)))
    u = (apex - base) / length
    n = np.array([-u[1], u[0]])
    n = n if n[0] > 0 else -n  # second ends to the right
    reach = float(np.hypot(*mask.shape))
    chords = []
    for t in np.linspace(0.5 * fine, length - 0.5 * fine, n_chords):
        a, b = _extent(mask, base + t * u, n, reach)
        chords.append([*a, *b])
    to_coarse = lambda v: (np.asarray(v, np.float64) + 0.5) / fine - 0.5  # noqa: E731
    return to_coarse([*apex, *base]), to_coarse(chords)


# --------------------------------------------------------------------------- writing


def write_video(path: str | Path, frames: np.ndarray, fps: float = FPS) -> Path:
    """Write (T, H, W) uint8 frames as an AVI, grey in three channels, FFV1 (lossless;
    OpenCV's own FFmpeg writes and reads it), through a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.avi")
    height, width = frames.shape[1:]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"FFV1"), float(fps),
                             (width, height), True)
    if not writer.isOpened():
        raise RuntimeError(f"{tmp}: OpenCV cannot write FFV1 AVI files on this system")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)
    return path


def _rows(seed: int, number: int, split: str) -> dict:
    """Simulate one video and its table rows (FileList row, tracing rows)."""
    v = simulate_video(seed, number)
    name = video_name(number)
    ml = v["spacing"] ** 3 / 1000.0  # cubic pixels -> mL
    edv = disc_volume(*v["traces"]["ED"]) * ml
    esv = disc_volume(*v["traces"]["ES"]) * ml
    filelist = {"FileName": name, "EF": round(100 * (1 - esv / edv), 4),
                "ESV": round(esv, 4), "EDV": round(edv, 4), "FrameHeight": SIZE,
                "FrameWidth": SIZE, "FPS": int(FPS), "NumberOfFrames": len(v["frames"]),
                "Split": _SPLIT_NAMES[split]}
    tracings = []
    for phase in sorted(("ED", "ES"), key=lambda ph: v[ph.lower()]):  # by frame, as EchoNet
        axis, chords = v["traces"][phase]
        for x1, y1, x2, y2 in [axis, *chords]:
            tracings.append([f"{name}.avi", *(round(float(c), 4) for c in (x1, y1, x2, y2)),
                             v[phase.lower()]])
    return {"frames": v["frames"], "filelist": filelist, "tracings": tracings}


def _write_one(seed: int, number: int, split: str, root: str) -> int:
    """Write one video and its rows (``.phantom/<name>.json``, after the video)."""
    out = _rows(seed, number, split)
    name = video_name(number)
    write_video(Path(root) / VIDEOS / f"{name}.avi", out["frames"])
    write_json_atomic(Path(root) / ROWS_DIR / f"{name}.json",
                      {"marker": _marker(seed, number, split), "filelist": out["filelist"],
                       "tracings": out["tracings"]})
    return number


def _marker(seed: int, number: int, split: str) -> dict:
    return {"version": ECHONET_VERSION, "seed": seed, "number": number, "split": split}


def _saved_rows(root: Path, seed: int, number: int, split: str) -> dict | None:
    """A video's rows written before for the same seed and split, if its video is there."""
    name = video_name(number)
    try:
        data = json.loads((root / ROWS_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("marker") != _marker(seed, number, split):
        return None
    return data if (root / VIDEOS / f"{name}.avi").is_file() else None


def _claim(root: Path, want: dict) -> None:
    """Create ``root`` or keep an EchoNet phantom tree of the same seed and version (another
    one is cleared); refuse a non-empty folder that is not an EchoNet phantom tree."""
    manifest = root / MANIFEST
    if root.exists() and any(root.iterdir()):
        try:
            have = json.loads(manifest.read_text())
        except (OSError, ValueError):
            have = None
        if not isinstance(have, dict) or have.get("layout") != ECHONET_LAYOUT:
            raise FileExistsError(
                f"{root}: folder is not empty and holds no {MANIFEST} of an EchoNet-layout "
                "phantom; write the phantom into an empty or new folder (it will not "
                "overwrite other data)")
        if {k: have.get(k) for k in want} != want:
            for sub in (VIDEOS, ROWS_DIR):
                shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    # present while a call runs: it marks the folder as ours, and the tree as incomplete
    write_json_atomic(manifest, {**want, "complete": False})


def write_echonet_phantom(root: str | Path, n_videos: int = 24, seed: int = 0,
                          workers: int | None = None, splits: Mapping[str, int] | None = None
                          ) -> Path:
    """Write an EchoNet-Dynamic-layout tree of ``n_videos`` phantom videos under ``root``.

    Splits: ``echonet_splits(n_videos, splits)`` (validation first, test last; e.g.
    ``splits={"train": 2, "val": 2, "test": 20}`` for an evaluation set). The tables
    are written last (atomically), and ``phantom.json`` says ``"complete": true`` only then.
    A second call keeps videos already written for the same seed and split and removes
    those no longer part of the tree; another seed rewrites it. ``workers`` processes share
    the videos (default ``min(4, cpus)`` from 8 videos to write, else this process).
    Returns ``root``.

    Raises:
        ValueError: a bad ``n_videos`` or ``splits``.
        FileExistsError: ``root`` is a non-empty folder that is not such a phantom tree.
    """
    root = Path(root)
    plan = echonet_splits(n_videos, splits)
    seed = int(seed)
    want = {"layout": ECHONET_LAYOUT, "version": ECHONET_VERSION, "seed": seed}
    _claim(root, want)
    names = {video_name(i + 1) for i in range(len(plan))}
    for folder, ext in ((VIDEOS, ".avi"), (ROWS_DIR, ".json")):
        for p in (root / folder).glob(f"*{ext}") if (root / folder).is_dir() else ():
            if p.name.startswith(".") or p.name[: -len(ext)] not in names:
                p.unlink()  # other trees' videos, or temporary files of a killed call
    todo = [(seed, i + 1, split, str(root)) for i, split in enumerate(plan)
            if _saved_rows(root, seed, i + 1, split) is None]
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if len(todo) >= 8 else 0
    run_jobs(_write_one, todo, workers, total=len(plan), desc="echonet phantom",
             unit="video")
    saved = [_saved_rows(root, seed, i + 1, split) for i, split in enumerate(plan)]
    if any(s is None for s in saved):
        raise RuntimeError(f"{root}: a video of the phantom was not written")
    _write_tables(root, [s for s in saved if s is not None])
    write_json_atomic(root / MANIFEST, {**want, "n_videos": len(plan), "complete": True})
    return root


def _write_tables(root: Path, saved: list[dict]) -> None:
    head = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
            "NumberOfFrames", "Split"]
    lines = [",".join(head)] + [",".join(str(s["filelist"][k]) for k in head) for s in saved]
    write_text_atomic(root / FILELIST, "\n".join(lines) + "\n")
    rows = [",".join(str(c) for c in r) for s in saved for r in s["tracings"]]
    write_text_atomic(root / TRACINGS, "FileName,X1,Y1,X2,Y2,Frame\n" + "\n".join(rows) + "\n")
