"""Hardening (issue 23): one table per section, each row a file this test damages itself and
what a user sees: the error (or warning) naming the file, or the value returned.

Sections: 6, the silent cases; 4, hostile images; 2, temporary files of several hosts on one
folder; 3, a full disk.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from echo_vlsm import io
from echo_vlsm.analysis.loading import MetricsFormatError, stale_note, stale_runs
from echo_vlsm.analysis.report import BEYOND_BEGIN, BEYOND_END, update_report
from echo_vlsm.errors import PathError
from echo_vlsm.imaging import MAX_IMAGE_PIXELS, ImageError
from echo_vlsm.inference.images import read_image
from echo_vlsm.pipeline.locks import lock_holder

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ 6. the silent cases

#: (case, what the test writes, what the user sees: an error matching, or the value)
STALE_CASES = [
    ("no file", None, []),
    ("two runs", '{"runs": ["a_real_trained_p1", "b"], "time": "t"}',
     ["a_real_trained_p1", "b"]),
    ("not JSON", '{"runs": [', r"stale_runs\.json: not JSON \(Expecting value"),
    ("not UTF-8", b"\xff\xfe{", r"stale_runs\.json: unreadable \('utf-8' codec"),
    ("a list", '["a"]', r"stale_runs\.json: no list of run ids under 'runs'"),
    ("runs not a list", '{"runs": "a"}', r"stale_runs\.json: no list of run ids under 'runs'"),
    ("runs not names", '{"runs": [1, 2]}', r"stale_runs\.json: no list of run ids under 'runs'"),
    ("a folder", "<dir>", r"stale_runs\.json: unreadable \(\[Errno 21\] Is a directory"),
]


@pytest.mark.parametrize("case, content, expected", STALE_CASES, ids=[c[0] for c in STALE_CASES])
def test_stale_runs_says_when_its_record_cannot_be_read(tmp_path, case, content, expected):
    path = tmp_path / "stale_runs.json"
    if content == "<dir>":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    if isinstance(expected, list):
        assert stale_runs(tmp_path) == expected
        return
    with pytest.raises(MetricsFormatError, match=expected) as info:
        stale_runs(tmp_path)
    assert info.value.path == path
    with pytest.warns(UserWarning, match=expected):  # what notebook 06 puts in the report
        note = stale_note(tmp_path)
    assert len(note) == 1 and note[0].startswith("**Stale runs unknown**: `")
    assert str(path) in note[0] and "--keep-stale" in note[0]


REPORT = "# Reproduction report\n\n## Table 1\n\nnumbers\n"
BLOCK = f"\n{BEYOND_BEGIN}\n\n## Beyond the study: seeds\n\nold\n\n{BEYOND_END}\n"
#: (case, report.md before the call, what the user sees: an error matching, or the new text)
REPORT_CASES = [
    ("no block yet", REPORT, REPORT + BLOCK.replace("old", "new")),
    ("a block", REPORT + BLOCK, REPORT + BLOCK.replace("old", "new")),
    ("a block, no final newline", REPORT + BLOCK[:-1], REPORT + BLOCK.replace("old", "new")),
    ("two blocks (an older bug)", REPORT + BLOCK + BLOCK, REPORT + BLOCK.replace("old", "new")),
    ("end marker deleted", REPORT + BLOCK.replace(BEYOND_END + "\n", ""),
     r"report\.md: the line '<!-- beyond the study: begin .*' has no matching "
     r"'<!-- beyond the study: end -->': one marker .* was deleted"),
    ("begin marker deleted", REPORT + BLOCK.replace(BEYOND_BEGIN + "\n", ""),
     r"report\.md: the line '<!-- beyond the study: end -->' has no matching "
     r"'<!-- beyond the study: begin"),
]


@pytest.mark.parametrize("case, before, expected", REPORT_CASES,
                         ids=[c[0] for c in REPORT_CASES])
def test_update_report_never_appends_a_second_block(tmp_path, case, before, expected):
    path = tmp_path / "report.md"
    path.write_text(before)
    sections = [("Beyond the study: seeds", "new")]
    if expected.startswith("# "):
        update_report(path, sections)
        assert path.read_text() == expected
        update_report(path, [])
        assert path.read_text() == REPORT  # the block removed: what notebook 06 wrote
        return
    with pytest.raises(PathError, match=expected) as info:
        update_report(path, sections)
    assert info.value.path == path and path.read_text() == before  # nothing written


#: (case, the record in a held lock file, what lock_holder returns)
LOCK_CASES = [
    ("a holder", '{"host": "n1", "pid": 12, "since": "t"}', {"host": "n1", "pid": 12,
                                                              "since": "t"}),
    ("being written", "", {"host": "?", "pid": "?"}),
    ("not JSON", "{host", {"host": "?", "pid": "?"}),
    ("a JSON list", "[1, 2]", {"host": "?", "pid": "?"}),
    ("a JSON string", '"n1"', {"host": "?", "pid": "?"}),
    ("a JSON number", "12", {"host": "?", "pid": "?"}),
    ("an object without host", '{"pid": 12}', {"host": "?", "pid": 12}),
    ("not UTF-8", b"\xff\xfe", {"host": "?", "pid": "?"}),
]


@pytest.mark.parametrize("case, record, expected", LOCK_CASES, ids=[c[0] for c in LOCK_CASES])
def test_lock_holder_is_always_a_record_with_host_and_pid(tmp_path, case, record, expected):
    path = tmp_path / ".job.lock"
    path.write_bytes(record if isinstance(record, bytes) else record.encode())
    assert lock_holder(path) is None  # nobody holds it: the record is not read
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: held, as by another process
        holder = lock_holder(path)
        assert holder == expected
        assert f"{holder.get('host')} (pid {holder.get('pid')})"  # what status prints
    finally:
        os.close(fd)
    assert lock_holder(path) is None and lock_holder(tmp_path / "none") is None


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_umask_is_read_without_being_changed(monkeypatch, tmp_path, mask):
    calls = []
    real_umask = os.umask
    old = real_umask(mask)
    try:
        monkeypatch.setattr(os, "umask", lambda m: calls.append(m) or real_umask(m))
        assert io._umask() == mask and io.default_mode() == 0o666 & ~mask
        io.write_text_atomic(tmp_path / "a.txt", "x")
        assert calls == []  # never set, so no other thread can create a file meanwhile
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
        # without /proc: the umask read once, at import, under a lock and never set to 0
        monkeypatch.setattr(io, "_proc_umask", lambda: None)
        monkeypatch.setattr(io, "_IMPORT_UMASK", 0o027)
        assert io._umask() == 0o027 and calls == []
        monkeypatch.setattr(io, "_IMPORT_UMASK", None)
        assert io._umask() == mask and calls == [0o077, mask]
    finally:
        real_umask(old)


def test_proc_umask_matches_the_real_umask():
    text = Path("/proc/self/status").read_text()
    expected = int(re.search(r"^Umask:\s+(\d+)", text, re.M).group(1), 8)
    assert io._proc_umask() == expected == os.umask(expected)
    assert json.dumps(io._umask())  # an int


# ------------------------------------------------------------------ 4. hostile images


def _gray(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth gray image, different under every flip and turn."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (40 + 3 * yy + xx + 60 * (xx < w // 4)).clip(0, 255).astype(np.uint8)


def write_png_bomb(path: Path, side: int) -> Path:
    """A valid 8-bit gray PNG of ``side`` x ``side`` black pixels, streamed (a few MB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    squeeze, row, idat = zlib.compressobj(1), bytes(side + 1), bytearray()
    for start in range(0, side, 64):
        idat += squeeze.compress(row * min(64, side - start))
    idat += squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", bytes(idat))
                     + chunk(b"IEND", b""))
    return path


def write_nifti(path: Path, size_xyz: tuple[int, ...], data: bytes | None = None) -> Path:
    """A NIfTI-1 file of uint8 pixels, ``size_xyz`` its dim[1:]; without ``data`` the pixel
    data is a sparse hole of the length the header needs."""
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, len(size_xyz), *size_xyz, *[1] * (7 - len(size_xyz)))
    struct.pack_into("<hh", h, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<8f", h, 76, 1, 0.3, 0.3, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    h[123], h[344:348] = 2, b"n+1\0"  # millimetres; NIfTI-1 in one file
    with open(path, "wb") as f:
        f.write(bytes(h) + bytes(4))
        if data is None:
            f.truncate(352 + math.prod(size_xyz))
        else:
            f.write(data)
    return path


def write_mhd(path: Path, dims: str, data: bytes | None = None, n: int = 0) -> Path:
    """A MetaImage header and its ``.raw`` file (sparse, ``n`` bytes, without ``data``)."""
    path.write_text(f"ObjectType = Image\nNDims = {len(dims.split())}\nDimSize = {dims}\n"
                    f"ElementSpacing = {' '.join(['0.3'] * len(dims.split()))}\n"
                    f"ElementType = MET_UCHAR\nElementDataFile = {path.stem}.raw\n")
    with open(path.with_suffix(".raw"), "wb") as f:
        if data is None:
            f.truncate(n)
        else:
            f.write(data)
    return path


def _save(image: Image.Image, path: Path, **kw) -> Path:
    image.save(path, **kw)
    return path


def _gzip(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    gz.write_bytes(gzip.compress(path.read_bytes(), 1))
    path.unlink()
    return gz


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose SOF header is changed to declare ``width`` x ``height``."""
    _save(Image.fromarray(_gray()), path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def _exif_jpeg(path: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display
    return _save(Image.fromarray(_gray()), path, format="JPEG", quality=95, exif=exif)


def _palette(path: Path, transparency: bool) -> Path:
    """A palette PNG: indices 5..31, entry i the gray 255 - 8 i."""
    pal = Image.frombytes("P", (64, 48), (_gray() // 8).tobytes())
    pal.putpalette([v for i in range(256) for v in (255 - 8 * i % 256,) * 3])
    return _save(pal, path, format="PNG", **({"transparency": 7} if transparency else {}))


_PALETTE_GRAY = (255 - 8 * (_gray() // 8).astype(np.int64) % 256).astype(np.uint8)
_WIDE = np.add.outer(np.arange(48) * 1000, np.arange(64) * 200).astype(np.uint16)  # 0..59600
_BIG = f"declares 30000 x 30000 pixels \\(900.0 megapixels\\), more than the {MAX_IMAGE_PIXELS}"


def _close(expected: np.ndarray, tol: float):
    def check(got: np.ndarray) -> None:
        assert got.shape == expected.shape and got.dtype == np.uint8
        assert np.abs(got.astype(int) - expected.astype(int)).mean() <= tol
    return check


#: (case, how the test makes the file (or array), what read_image (and so ``segment``)
#: gives: the exact gray image, a check of it, or the error it raises, matching)
IMAGE_CASES = [
    ("PNG bomb 20000 x 20000 (1.6 MB)", lambda p: write_png_bomb(p / "bomb.png", 20000),
     r"bomb\.png: its header declares 20000 x 20000 pixels \(400\.0 megapixels\), more than "
     r"the 16777216 \(4096 x 4096\) an echo frame may have; refused before decoding"),
    ("JPEG declaring 60000 x 60000", lambda p: _jpeg_declaring(p / "big.jpg", 60000, 60000),
     r"big\.jpg: its header declares too many pixels \(Image size \(3600000000 pixels\) "
     r"exceeds limit"),
    ("JPEG declaring 5000 x 4000", lambda p: _jpeg_declaring(p / "big.jpg", 5000, 4000),
     r"big\.jpg: its header declares 5000 x 4000 pixels \(20\.0 megapixels\)"),
    ("16-bit gray PNG, 0..59600", lambda p: _save(Image.fromarray(_WIDE), p / "a.png"),
     np.rint(_WIDE / 59600 * 255).astype(np.uint8)),
    ("16-bit gray PNG holding 0..255", lambda p: _save(Image.fromarray(
        _gray().astype(np.uint16)), p / "a.png"), _gray()),
    ("palette PNG", lambda p: _palette(p / "a.png", False), _PALETTE_GRAY),
    ("palette PNG with transparency", lambda p: _palette(p / "a.png", True), _PALETTE_GRAY),
    ("gray+alpha PNG", lambda p: _save(Image.fromarray(
        np.dstack([_gray(), np.full_like(_gray(), 9)]), mode="LA"), p / "a.png"), _gray()),
    ("1-bit PNG", lambda p: _save(Image.fromarray(_gray() > 100), p / "a.png"),
     (_gray() > 100).astype(np.uint8) * 255),
    ("RGBA PNG", lambda p: _save(Image.fromarray(np.dstack([_gray()] * 3 + [_gray() * 0])),
                                 p / "a.png"), _gray()),
    ("CMYK JPEG", lambda p: _save(Image.fromarray(_gray()).convert("CMYK"), p / "a.jpg",
                                  quality=95), _close(_gray(), 1.5)),
    ("JPEG with EXIF orientation 6", lambda p: _exif_jpeg(p / "a.jpg"),
     _close(np.rot90(_gray(), -1), 1.5)),
    ("truncated PNG", lambda p: _truncated(_save(Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)), p / "cut.png")),
     r"cut\.png: cannot decode the image: truncated or damaged PNG \("),
    ("truncated JPEG", lambda p: _truncated(_save(Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)), p / "cut.jpg",
        format="JPEG")), r"cut\.jpg: cannot decode the image: truncated or damaged JPEG "
                         r"\(image file is truncated"),
    ("TIFF named .png", lambda p: _save(Image.fromarray(_gray()), p / "a.png", format="TIFF"),
     r"a\.png: cannot decode the image: not a PNG or JPEG file"),
    (".mhd declaring 30000 x 30000, sparse 900 MB .raw",
     lambda p: write_mhd(p / "huge.mhd", "30000 30000", n=900_000_000), r"huge\.mhd: its header "
                                                                         + _BIG),
    (".mhd 3-D, 4 slices", lambda p: write_mhd(p / "vol.mhd", "64 48 4", n=64 * 48 * 4),
     r"vol\.mhd: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 4\)"),
    (".mhd 2-D", lambda p: write_mhd(p / "a.mhd", "64 48", data=_gray().tobytes()), _gray()),
    ("NIfTI 3-D, one slice", lambda p: write_nifti(p / "a.nii", (64, 48, 1), _gray().tobytes()),
     _gray()),
    ("NIfTI 3-D, 5 slices", lambda p: write_nifti(p / "vol.nii", (64, 48, 5)),
     r"vol\.nii: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 5\)"),
    ("NIfTI 4-D, 1 slice x 1 frame", lambda p: write_nifti(p / "a.nii", (64, 48, 1, 1),
                                                          _gray().tobytes()), _gray()),
    ("NIfTI 4-D, 1 slice x 3 frames", lambda p: write_nifti(p / "seq.nii", (64, 48, 1, 3)),
     r"seq\.nii: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 1, 3\)"),
    ("NIfTI declaring 30000 x 30000, sparse", lambda p: write_nifti(p / "huge.nii",
                                                                    (30000, 30000)),
     r"huge\.nii: its header " + _BIG),
    ("NIfTI.gz declaring 30000 x 30000 (1 KB of data)", lambda p: _gzip(write_nifti(
        p / "huge.nii", (30000, 30000), bytes(1000))), r"huge\.nii\.gz: its header " + _BIG),
    ("int array of 0s and 1s", lambda p: np.array([[0, 1], [1, 0]], np.int64),
     np.array([[0, 1], [1, 0]], np.uint8)),
    ("int array of 1s", lambda p: np.ones((2, 2), np.int32), np.ones((2, 2), np.uint8)),
    ("float array in [0, 1]", lambda p: np.array([[0, 0.5], [1, 0]], np.float32),
     np.array([[0, 128], [255, 0]], np.uint8)),
    ("uint16 array 0..4000", lambda p: np.array([[0, 1000], [4000, 2000]], np.uint16),
     np.array([[0, 64], [255, 128]], np.uint8)),
    ("int RGB array 0..255", lambda p: np.dstack([_gray().astype(np.int64)] * 3), _gray()),
    ("array 30000 x 30000", lambda p: np.zeros((30000, 30000), np.uint8),
     r"<array>: the array has 30000 x 30000 pixels \(900\.0 megapixels\)"),
]


@pytest.mark.parametrize("case, make, expected", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_hostile_images_are_read_right_or_refused_naming_the_file(tmp_path, case, make,
                                                                   expected):
    source = make(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(ImageError, match=expected) as info:
            read_image(source)
        if isinstance(source, Path):
            assert info.value.path == source
        return
    got = read_image(source)
    if callable(expected):
        expected(got)
    else:
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------ 2. several hosts, one folder

DAY = 24 * 3600
#: (case, a temporary file's name, its age in seconds, removed by clean_temp_files?)
TEMP_CASES = [
    ("this host, writer dead", ".state.pt.99999999@{here}-k2j4_x.tmp", 0, True),
    ("this host, writer running", ".metrics.csv.{live}@{here}-abcdef.tmp", 0, False),
    ("this host, this process", ".metrics.csv.{own}@{here}-abcdef.tmp", 0, False),
    ("this host, writer running, 2 days old", ".a.png.{live}@{here}-abcdef.tmp", 2 * DAY, False),
    ("another host, pid dead here", ".b.png.99999999@{other}-abcdef.tmp", 0, False),
    ("another host, 23 h old", ".c.png.99999999@{other}-abcdef.tmp", DAY - 3600, False),
    ("another host, 25 h old", ".d.png.{live}@{other}-abcdef.tmp", DAY + 3600, True),
    ("older version (pid, no host)", ".e.pt.99999999-abcdef.tmp", 0, False),
    ("older version, 25 h old", ".f.pt.99999999-abcdef.tmp", DAY + 3600, True),
    ("oldest version (no pid)", ".model.safetensors.ab12cd34.tmp", 0, False),
    ("oldest version, 25 h old", ".g.safetensors.ab12cd34.tmp", DAY + 3600, True),
    ("not a temporary file, old", "model.safetensors", 9 * DAY, False),
    ("hidden, not temporary, old", ".export_manifest.json", 9 * DAY, False),
    ("the phantom's partial folder name", ".patient0001.tmp", 9 * DAY, False),
]


@pytest.mark.parametrize("case, name, age, gone", TEMP_CASES, ids=[c[0] for c in TEMP_CASES])
def test_only_this_hosts_dead_writers_files_go_at_once(tmp_path, monkeypatch, case, name, age,
                                                       gone):
    monkeypatch.setenv(io.HOST_ID_ENV, "host-a")
    here = io.host_tag()
    monkeypatch.setenv(io.HOST_ID_ENV, "host-b")
    other = io.host_tag()
    monkeypatch.setenv(io.HOST_ID_ENV, "host-a")
    assert here != other and re.fullmatch("[0-9a-f]{12}", here)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        path = tmp_path / name.format(here=here, other=other, own=os.getpid(), live=proc.pid)
        path.write_text("x")
        os.utime(path, (time.time() - age, time.time() - age))
        removed = io.clean_temp_files(tmp_path)
        assert removed == ([path] if gone else []) and path.exists() is not gone
    finally:
        proc.kill()
        proc.wait()


def test_atomic_writes_name_their_host_and_pid(tmp_path, monkeypatch):
    monkeypatch.setenv(io.HOST_ID_ENV, "host-a")
    with io.atomic_path(tmp_path / "a.bin") as tmp:
        m = io.TEMP_PATTERN.match(tmp.name)
        assert m and m["pid"] == str(os.getpid()) and m["host"] == io.host_tag()
        assert tmp.name.startswith(f".a.bin.{os.getpid()}@{io.host_tag()}-")
        monkeypatch.delenv(io.HOST_ID_ENV)  # the machine's own identity: another tag
        assert io.host_tag() != m["host"] and io.clean_temp_files(tmp_path) == []
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x"


WRITER = """
import json, sys, time
from pathlib import Path
from echo_vlsm.io import TEMP_PATTERN, atomic_path, clean_temp_files, host_tag
folder, me, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not (folder / "go").exists():
    time.sleep(0.005)
removed, seen = [], 0
for k in range(n):
    with atomic_path(folder / f"{me}_{k:03d}.bin") as tmp:
        tmp.write_bytes(f"{me} {k}\\n".encode() * 500)
        time.sleep(0.005)
        others = [p for p in folder.glob(".*.tmp")
                  if TEMP_PATTERN.match(p.name)["host"] != host_tag()]
        seen += bool(others)
        removed += [p.name for p in clean_temp_files(folder)]  # while the other writes
        time.sleep(0.005)
print(json.dumps({"removed": removed, "seen": seen}))
"""


def _in_pid_namespace(pids_used: int, args: list[str]) -> list[str]:
    """A command run in a new pid namespace, as on another machine: its pids mean nothing
    to the other process; ``pids_used`` short processes first, so the two namespaces'
    Python processes get different pids (each dead in the other namespace)."""
    script = "/bin/true; " * pids_used + " ".join(f"'{a}'" for a in args) + "; exit $?"
    return ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                          capture_output=True).returncode == 0


#: (case, host identity of each of the two processes, do both finish with nothing of the
#: other's removed?) The second row is the control: one identity in two pid namespaces, so
#: each judges the other's writes dead and removes them under it.
TWO_HOST_CASES = [
    ("two hosts", ("host-a", "host-b"), True),
    ("control: one identity, two pid namespaces", ("host-a", "host-a"), False),
]


@pytest.mark.parametrize("case, ids, clean", TWO_HOST_CASES, ids=[c[0] for c in TWO_HOST_CASES])
def test_two_hosts_on_one_folder_never_remove_each_others_writes(tmp_path, case, ids, clean):
    if not _can_unshare():
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root: unshare --pid must work for the two-host test")
        pytest.skip("needs unshare --pid --mount-proc (root) to give two processes two "
                    "pid namespaces, as on two hosts")
    shared, n = tmp_path / "shared", 60
    shared.mkdir()
    procs = []
    for k, (who, host) in enumerate(zip(("a", "b"), ids)):
        env = {**os.environ, io.HOST_ID_ENV: host, "PYTHONPATH": str(ROOT)}
        cmd = _in_pid_namespace(3 * k, [sys.executable, "-c", WRITER, str(shared), who, str(n)])
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)  # both waiting on the start line
    (shared / "go").touch()
    outs = [p.communicate(timeout=120) for p in procs]
    if not clean:  # the control: some write lost its temporary file to the other process
        assert any(p.returncode != 0 and "FileNotFoundError" in err
                   for p, (_, err) in zip(procs, outs)) or any(
            json.loads(out)["removed"] for out, _ in outs if out.strip()), outs
        return
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    reports = [json.loads(out) for out, _ in outs]
    assert [r["removed"] for r in reports] == [[], []]
    assert sum(r["seen"] for r in reports) > 0, "the writes never overlapped"
    (shared / "go").unlink()
    alone = tmp_path / "alone"  # one process writing both sets
    for who in ("a", "b"):
        for k in range(n):
            io.write_bytes_atomic(alone / f"{who}_{k:03d}.bin", f"{who} {k}\n".encode() * 500)
    assert {p.name: p.read_bytes() for p in shared.iterdir()} == {
        p.name: p.read_bytes() for p in alone.iterdir()}
