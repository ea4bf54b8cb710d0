"""Reading the EchoNet-Dynamic dataset: FileList.csv, VolumeTracings.csv and Videos/*.avi.

EchoNet-Dynamic (Ouyang et al., Nature 2020) holds 10,030 apical four-chamber videos
(112 x 112, grey in three channels), each with its clinical ejection fraction (EF), volumes
(EDV, ESV) and expert tracings of the LV at two frames (end-diastole and end-systole):

- ``FileList.csv``: FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames,
  Split (TRAIN / VAL / TEST). FileName appears with and without ``.avi``: both are accepted.
- ``VolumeTracings.csv``: FileName, X1, Y1, X2, Y2, Frame. Per traced frame the first row is
  the long axis, the following rows the disc chords (X1, Y1)-(X2, Y2), in pixels (X column,
  Y row). The LV polygon runs through the chords' first ends, then back through their
  second ends in reverse order.
- ``Videos/<FileName>.avi``, decoded with OpenCV (its own FFmpeg).

Which traced frame is ED is decided by the traced area (the larger one), never by row order.

CONTRACT:

- ``EchoNetTrace``: one traced frame (frame index, long axis, chords; polygon, area, mask).
- ``EchoNetVideo``: one FileList row with its two traces (``ed``, ``es``); ``frames()``
  decodes the video, ``frame(phase)`` one traced frame.
- ``read_echonet(root, splits=None) -> list[EchoNetVideo]``, sorted by name; the first
  problem raises ``EchoNetFormatError`` naming file and line.
- ``validate(root) -> list[str]``: every problem of the tree at once (videos decoded).
- ``read_video(path) -> (T, H, W) uint8``: a video's frames, grey.

Examples::

    videos = read_echonet("data/raw/echonet")
    image = videos[0].frame("ED")                 # (112, 112) uint8
    mask = videos[0].ed.mask(112, 112)            # (112, 112) bool, the traced LV
    problems = validate("data/raw/echonet")       # [] for a sound tree
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from skimage.draw import polygon as draw_polygon

from echo_vlsm.errors import PathError
from echo_vlsm.structures import SPLITS

__all__ = ["FILELIST", "FILELIST_COLUMNS", "MIN_CHORDS", "TRACINGS", "TRACING_COLUMNS",
           "VIDEOS", "EchoNetFormatError", "EchoNetTrace", "EchoNetVideo",
           "disc_volume", "find_root", "normalize_name", "read_echonet", "read_video", "validate"]

FILELIST = "FileList.csv"
TRACINGS = "VolumeTracings.csv"
VIDEOS = "Videos"
FILELIST_COLUMNS: tuple[str, ...] = ("FileName", "EF", "ESV", "EDV", "FrameHeight",
                                     "FrameWidth", "FPS", "NumberOfFrames", "Split")
TRACING_COLUMNS: tuple[str, ...] = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
# Fewer chords than this make no LV outline worth the name (the public tracings have 20).
MIN_CHORDS = 3
_SPLIT_OF = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
_SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}


class EchoNetFormatError(PathError):
    """An EchoNet-Dynamic file is missing, unreadable or inconsistent; names file and line."""


def normalize_name(name: str) -> str:
    """A FileName without its ``.avi`` (``"0X1A.avi"`` and ``"0X1A"`` -> ``"0X1A"``)."""
    name = str(name).strip()
    return name[:-4] if name.lower().endswith(".avi") else name


# --------------------------------------------------------------------------- traces


def disc_volume(axis: np.ndarray, chords: np.ndarray) -> float:
    """Single-plane method of discs: ``pi/4 * h * sum(d_i^2)``, ``h`` = long axis / number
    of chords, in cubic units of the coordinates (pixels here).

    >>> axis = np.array([0.0, 0.0, 0.0, 20.0])
    >>> round(disc_volume(axis, np.array([[0.0, y, 10.0, y] for y in range(20)])), 1)
    1570.8
    """
    length = math.hypot(axis[2] - axis[0], axis[3] - axis[1])
    d2 = (chords[:, 2] - chords[:, 0]) ** 2 + (chords[:, 3] - chords[:, 1]) ** 2
    return float(math.pi / 4 * length / len(chords) * d2.sum())


@dataclass(frozen=True)
class EchoNetTrace:
    """One traced frame: the long axis (x1, y1, x2, y2) and the chords, (n, 4) in pixels."""

    frame: int
    axis: np.ndarray  # (4,)
    chords: np.ndarray  # (n, 4): x1, y1, x2, y2
    line: int  # line of its first row in VolumeTracings.csv (1 = the header)

    @property
    def polygon(self) -> np.ndarray:
        """(m, 2) x, y: the chords' first ends, then their second ends in reverse order."""
        return np.concatenate([self.chords[:, 0:2], self.chords[::-1, 2:4]])

    @property
    def area(self) -> float:
        """The polygon's area in square pixels (shoelace formula)."""
        x, y = self.polygon[:, 0], self.polygon[:, 1]
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    @property
    def volume(self) -> float:
        """Single-plane disc volume in cubic pixels (``disc_volume``)."""
        return disc_volume(self.axis, self.chords)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The traced LV as an (height, width) bool mask: pixels whose centre lies in the
        polygon (pixel (r, c) has its centre at x = c, y = r)."""
        out = np.zeros((height, width), bool)
        rr, cc = draw_polygon(self.polygon[:, 1], self.polygon[:, 0], (height, width))
        out[rr, cc] = True
        return out


def _traces_of(rows: pd.DataFrame, path: Path, name: str, problems: _Problems
               ) -> list[EchoNetTrace]:
    """The traced frames of one video, from its rows of VolumeTracings.csv (file order)."""
    out = []
    for frame, group in rows.groupby("_frame", sort=True):
        line = int(group["_line"].iloc[0])
        if len(group) < 1 + MIN_CHORDS:
            problems.add(EchoNetFormatError(
                path, f"line {line}: {name} frame {frame} has {len(group) - 1} chords after "
                f"its long axis; at least {MIN_CHORDS} are needed"))
            continue
        xy = group[["_x1", "_y1", "_x2", "_y2"]].to_numpy(np.float64)
        out.append(EchoNetTrace(int(frame), xy[0], xy[1:], line))
    return out


# --------------------------------------------------------------------------- videos


def read_video(path: str | Path, stop: int | None = None) -> np.ndarray:
    """Decode a video with OpenCV: (T, H, W) uint8, grey (the first of its equal channels).

    ``stop`` decodes only the frames before it. Raises ``EchoNetFormatError`` when the file
    is missing or yields no frame.
    """
    path = Path(path)
    if not path.is_file():
        raise EchoNetFormatError(path, "missing video")
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while cap.isOpened() and (stop is None or len(frames) < stop):
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame[..., 0] if frame.ndim == 3 else frame)
    finally:
        cap.release()
    if not frames:
        raise EchoNetFormatError(path, "not a decodable video (OpenCV read no frame)")
    return np.stack(frames)


_LAST_DECODED: dict = {}  # the video EchoNetVideo.frame decoded last, per process


@dataclass(frozen=True)
class EchoNetVideo:
    """One FileList row: a video, its reference values and its ED and ES traces."""

    name: str  # FileName without .avi
    split: str  # "train" | "val" | "test"
    path: Path  # Videos/<name>.avi
    tracings_path: Path
    ef: float  # percent, the clinical reference
    edv: float | None  # mL as published (no pixel spacing is published)
    esv: float | None
    fps: float | None
    n_frames: int | None  # NumberOfFrames as the FileList states it
    height: int
    width: int
    ed: EchoNetTrace
    es: EchoNetTrace

    def trace(self, phase: str) -> EchoNetTrace:
        if phase not in ("ED", "ES"):
            raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
        return self.ed if phase == "ED" else self.es

    def frames(self) -> np.ndarray:
        """All frames, (T, H, W) uint8."""
        return read_video(self.path)

    def frame(self, phase: str) -> np.ndarray:
        """The traced frame of ``phase``, (H, W) uint8. The video is decoded up to its later
        traced frame and kept until another video is decoded, so that the export's ED and
        ES images of one video cost one decoding."""
        index = self.trace(phase).frame
        stop = max(self.ed.frame, self.es.frame) + 1
        st = self.path.stat() if self.path.is_file() else None
        key = (str(self.path), stop, st and (st.st_size, st.st_mtime_ns))
        if _LAST_DECODED.get("key") != key:
            _LAST_DECODED.clear()
            _LAST_DECODED.update(key=key, frames=read_video(self.path, stop=stop))
        frames = _LAST_DECODED["frames"]
        if len(frames) <= index:
            raise EchoNetFormatError(
                self.path, f"{phase} is traced at frame {index}, but the video has "
                f"{len(frames)} frames")
        return frames[index].copy()


# --------------------------------------------------------------------------- tables


class _Problems:
    """Collects problems (validate) or raises the first one (read_echonet)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[str] = []

    def add(self, error: EchoNetFormatError) -> None:
        if self.strict:
            raise error
        self.items.append(str(error))


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise EchoNetFormatError(path, f"missing (an EchoNet-Dynamic tree holds {FILELIST}, "
                                 f"{TRACINGS} and {VIDEOS}/)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EchoNetFormatError(path, f"not a readable CSV ({exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise EchoNetFormatError(path, f"lacks the columns {missing}; expected {list(columns)}")
    df["_line"] = np.arange(2, len(df) + 2)
    df["_name"] = df["FileName"].map(normalize_name)
    return df


def _number(text: str) -> float | None:
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _tracing_table(path: Path, problems: _Problems) -> pd.DataFrame:
    """VolumeTracings.csv with numeric ``_x1.._y2``, ``_frame``; bad rows reported, dropped."""
    df = _read_csv(path, TRACING_COLUMNS)
    cols = {"X1": "_x1", "Y1": "_y1", "X2": "_x2", "Y2": "_y2", "Frame": "_frame"}
    for src, dst in cols.items():
        df[dst] = pd.to_numeric(df[src].str.strip(), errors="coerce")
    bad = df[list(cols.values())].isna().any(axis=1) | (df["_frame"] % 1 != 0)
    for _, row in df[bad].iterrows():
        problems.add(EchoNetFormatError(
            path, f"line {row['_line']}: {row['_name']}: X1, Y1, X2, Y2 must be numbers and "
            f"Frame a whole number, got {[row[c] for c in cols]}"))
    df = df[~bad].copy()
    df["_frame"] = df["_frame"].astype(np.int64)
    return df


def _filelist_row(row: pd.Series, path: Path, problems: _Problems) -> dict:
    """The checked values of one FileList row; ``ok`` is False when a value is unusable
    (``height``/``width`` are None when they are the bad ones)."""
    where = f"line {row['_line']}: {row['_name']}"
    ok = True
    ef = _number(row["EF"])
    if ef is None or not 0 <= ef <= 100:
        problems.add(EchoNetFormatError(
            path, f"{where}: EF is {row['EF']!r}; expected a percentage in 0..100"))
        ok = False
    split = _SPLIT_OF.get(str(row["Split"]).strip().upper())
    if split is None:
        problems.add(EchoNetFormatError(
            path, f"{where}: Split is {row['Split']!r}; expected one of {list(_SPLIT_OF)}"))
        ok = False
    size = [_number(row[c]) for c in ("FrameHeight", "FrameWidth")]
    if any(s is None or s < 1 or s % 1 for s in size):
        problems.add(EchoNetFormatError(
            path, f"{where}: FrameHeight, FrameWidth are {row['FrameHeight']!r}, "
            f"{row['FrameWidth']!r}; expected whole numbers of pixels"))
        ok, size = False, [None, None]
    n_frames = _number(row["NumberOfFrames"])
    return dict(ok=ok, ef=ef, split=split, height=size[0] and int(size[0]),
                width=size[1] and int(size[1]), edv=_number(row["EDV"]),
                esv=_number(row["ESV"]), fps=_number(row["FPS"]),
                n_frames=int(n_frames) if n_frames and n_frames % 1 == 0 else None)


def _check_traces(traces: list[EchoNetTrace], facts: dict, name: str, n_frames: int | None,
                  path: Path, problems: _Problems) -> bool:
    """Two traced frames, inside the frame, within the video; their areas differ."""
    ok = True
    if len(traces) != 2:
        frames = [t.frame for t in traces]
        problems.add(EchoNetFormatError(
            path, f"{name} has {len(traces)} usable traced frames {frames}; expected two "
            "(end-diastole and end-systole)"))
        ok = False
    h, w = facts["height"], facts["width"]
    for t in traces:
        xy = np.concatenate([t.axis[None], t.chords])
        xs, ys = xy[:, [0, 2]], xy[:, [1, 3]]
        if h is None or w is None:
            ok = False  # the FileList's frame size is unusable (reported there)
        elif xs.min() < -0.5 or ys.min() < -0.5 or xs.max() > w - 0.5 or ys.max() > h - 0.5:
            problems.add(EchoNetFormatError(
                path, f"line {t.line}: {name} frame {t.frame} is traced outside the "
                f"{w} x {h} frame (x {xs.min():.1f}..{xs.max():.1f}, "
                f"y {ys.min():.1f}..{ys.max():.1f})"))
            ok = False
        if t.frame < 0 or (n_frames is not None and t.frame >= n_frames):
            problems.add(EchoNetFormatError(
                path, f"line {t.line}: {name} is traced at frame {t.frame}, beyond the "
                f"video's {n_frames} frames (0..{(n_frames or 0) - 1})"))
            ok = False
    if ok and traces[0].area == traces[1].area:
        problems.add(EchoNetFormatError(
            path, f"line {traces[0].line}: {name}: both traced frames have the same area; "
            "ED (the larger) cannot be told from ES"))
        ok = False
    return ok


# --------------------------------------------------------------------------- tree


def find_root(root: str | Path) -> Path:
    """The EchoNet-Dynamic folder: ``root`` itself or its one subfolder holding
    ``FileList.csv`` (as the archive unpacks, e.g. ``EchoNet-Dynamic/``)."""
    root = Path(root)
    if not root.is_dir():
        raise EchoNetFormatError(root, "EchoNet-Dynamic folder does not exist")
    if (root / FILELIST).is_file():
        return root
    found = [p for p in sorted(root.iterdir()) if (p / FILELIST).is_file()]
    if len(found) == 1:
        return found[0]
    raise EchoNetFormatError(
        root, f"not an EchoNet-Dynamic tree: expected {FILELIST}, {TRACINGS} and {VIDEOS}/"
        + (f"; several candidates inside: {[p.name for p in found]}" if found else ""))


def _user_splits(splits: Mapping[str, Iterable[str]], names: set[str]) -> dict[str, str]:
    """Video name -> split from the user's lists; names not in the FileList are refused."""
    if not isinstance(splits, Mapping):
        raise TypeError("splits must be a mapping like {'train': [...], 'val': [...], "
                        "'test': [...]} of FileNames")
    out: dict[str, str] = {}
    for split, members in splits.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} in splits; expected keys among {SPLITS}")
        if isinstance(members, str):
            raise TypeError(f"splits[{split!r}] must be a list of FileNames, not {members!r}")
        for member in members:
            name = normalize_name(member)
            if name not in names:
                raise ValueError(f"splits[{split!r}] lists {member!r}, which is not in "
                                 f"{FILELIST}")
            if out.get(name, split) != split:
                raise ValueError(f"{member!r} is listed in both {out[name]!r} and {split!r}")
            out[name] = split
    return out


def _scan(root: str | Path, splits, problems: _Problems, decode: bool) -> list[EchoNetVideo]:
    root = find_root(root)
    list_path, trace_path = root / FILELIST, root / TRACINGS
    files = _read_csv(list_path, FILELIST_COLUMNS)
    tracings = _tracing_table(trace_path, problems)
    by_name = {name: rows for name, rows in tracings.groupby("_name", sort=False)}
    listed: set[str] = set()
    for _, row in files.iterrows():
        if row["_name"] in listed:
            problems.add(EchoNetFormatError(
                list_path, f"line {row['_line']}: {row['_name']} is listed twice"))
        listed.add(row["_name"])
    for name, rows in by_name.items():
        if name not in listed:
            problems.add(EchoNetFormatError(
                trace_path, f"line {rows['_line'].iloc[0]}: {name} has tracings but no row "
                f"in {FILELIST}"))
    assignment = _user_splits(splits, listed) if splits is not None else None
    videos, seen = [], set()
    for _, row in files.iterrows():
        name = row["_name"]
        if name in seen or (assignment is not None and name not in assignment):
            continue
        seen.add(name)
        video = _video(root, row, by_name.get(name), problems, decode)
        if video is not None:
            if assignment is not None:
                video = _with_split(video, assignment[name])
            videos.append(video)
    videos.sort(key=lambda v: (_SPLIT_ORDER[v.split], v.name))
    return videos


def _with_split(video: EchoNetVideo, split: str) -> EchoNetVideo:
    return replace(video, split=split)


def _video(root: Path, row: pd.Series, rows: pd.DataFrame | None, problems: _Problems,
           decode: bool) -> EchoNetVideo | None:
    """One FileList row checked against its video and its tracings; None when unusable.
    Every check runs whatever the others found, so ``validate`` reports all at once."""
    list_path, trace_path = root / FILELIST, root / TRACINGS
    name = row["_name"]
    facts = _filelist_row(row, list_path, problems)
    path = root / VIDEOS / f"{name}.avi"
    n_frames, usable = facts["n_frames"], facts["ok"]
    if not path.is_file():
        problems.add(EchoNetFormatError(path, f"missing video (listed at line {row['_line']} "
                                        f"of {FILELIST})"))
        usable = False
    elif decode:
        try:
            frames = read_video(path)
            n_frames = len(frames)
            if facts["height"] and frames.shape[1:] != (facts["height"], facts["width"]):
                problems.add(EchoNetFormatError(
                    path, f"frames are {frames.shape[2]} x {frames.shape[1]}; {FILELIST} line "
                    f"{row['_line']} says {facts['width']} x {facts['height']}"))
                usable = False
        except EchoNetFormatError as exc:
            problems.add(exc)
            usable = False
    if rows is None:
        problems.add(EchoNetFormatError(
            list_path, f"line {row['_line']}: {name} has no tracings in {TRACINGS}"))
        return None
    traces = _traces_of(rows, trace_path, name, problems)
    if not _check_traces(traces, facts, name, n_frames, trace_path, problems) or not usable:
        return None
    ed, es = sorted(traces, key=lambda t: -t.area)  # the larger traced area is ED
    return EchoNetVideo(name=name, split=facts["split"], path=path, tracings_path=trace_path,
                        ef=facts["ef"], edv=facts["edv"], esv=facts["esv"], fps=facts["fps"],
                        n_frames=facts["n_frames"], height=facts["height"],
                        width=facts["width"], ed=ed, es=es)


def read_echonet(root: str | Path, splits: Mapping[str, Iterable[str]] | None = None
                 ) -> list[EchoNetVideo]:
    """Read an EchoNet-Dynamic tree into videos, sorted by (split, name).

    The tables are read and checked here (every FileList row against its video file and
    its two traced frames; a frame's number against the FileList's NumberOfFrames); pixels
    are decoded by ``video.frame(phase)`` / ``video.frames()``. The first problem raises
    ``EchoNetFormatError`` naming the file and line; ``validate`` lists them all.

    Splits come from the FileList's ``Split`` (TRAIN / VAL / TEST -> train / val / test);
    ``splits={"train": [...], "val": [...], "test": [...]}`` gives your own lists of
    FileNames (with or without ``.avi``) instead; videos not listed are left out.
    """
    return _scan(root, splits, _Problems(strict=True), decode=False)


def validate(root: str | Path, splits: Mapping[str, Iterable[str]] | None = None
             ) -> list[str]:
    """Every problem of an EchoNet-Dynamic tree, one string each (``"<file>: line N: ..."``);
    ``[]`` when sound. Unlike ``read_echonet`` it does not stop at the first problem and it
    decodes every video (a traced frame is checked against the frames really decoded)."""
    problems = _Problems(strict=False)
    try:
        _scan(root, splits, problems, decode=True)
    except EchoNetFormatError as exc:  # the root or a table is unusable
        problems.items.append(str(exc))
    return problems.items
