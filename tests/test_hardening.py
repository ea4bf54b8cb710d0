"""Hardening (issue 23): one table per section, each row a file this test damages itself and
what a user sees: the error (or warning) naming the file, or the value returned.

Sections: 6, the silent cases; 4, hostile images and a model folder granting itself trust; 2,
temporary files of several hosts on one folder. Section 3, a full disk, is
``tests/test_disk_full.py``; the dataset cache of several hosts, ``tests/test_cache_race.py``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hostile_files as H
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


_PALETTE_GRAY = (255 - 8 * (H.gray() // 8).astype(np.int64) % 256).astype(np.uint8)
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
    ("PNG bomb 20000 x 20000 (1.6 MB)", lambda p: H.write_png_bomb(p / "bomb.png", 20000),
     r"bomb\.png: its header declares 20000 x 20000 pixels \(400\.0 megapixels\), more than "
     r"the 16777216 \(4096 x 4096\) an echo frame may have; refused before decoding"),
    ("JPEG declaring 60000 x 60000", lambda p: H.jpeg_declaring(p / "big.jpg", 60000, 60000),
     r"big\.jpg: its header declares too many pixels \(Image size \(3600000000 pixels\) "
     r"exceeds limit"),
    ("JPEG declaring 5000 x 4000", lambda p: H.jpeg_declaring(p / "big.jpg", 5000, 4000),
     r"big\.jpg: its header declares 5000 x 4000 pixels \(20\.0 megapixels\)"),
    ("16-bit gray PNG, 0..59600", lambda p: H.save(Image.fromarray(_WIDE), p / "a.png"),
     np.rint(_WIDE / 59600 * 255).astype(np.uint8)),
    ("16-bit gray PNG holding 0..255", lambda p: H.save(Image.fromarray(
        H.gray().astype(np.uint16)), p / "a.png"), H.gray()),
    ("palette PNG", lambda p: H.palette(p / "a.png", False), _PALETTE_GRAY),
    ("palette PNG with transparency", lambda p: H.palette(p / "a.png", True), _PALETTE_GRAY),
    ("gray+alpha PNG", lambda p: H.save(Image.fromarray(
        np.dstack([H.gray(), np.full_like(H.gray(), 9)]), mode="LA"), p / "a.png"), H.gray()),
    ("1-bit PNG", lambda p: H.save(Image.fromarray(H.gray() > 100), p / "a.png"),
     (H.gray() > 100).astype(np.uint8) * 255),
    ("RGBA PNG", lambda p: H.save(Image.fromarray(np.dstack([H.gray()] * 3 + [H.gray() * 0])),
                                 p / "a.png"), H.gray()),
    ("CMYK JPEG", lambda p: H.save(Image.fromarray(H.gray()).convert("CMYK"), p / "a.jpg",
                                  quality=95), _close(H.gray(), 1.5)),
    ("JPEG with EXIF orientation 6", lambda p: H.exif_jpeg(p / "a.jpg"),
     _close(np.rot90(H.gray(), -1), 1.5)),
    ("truncated PNG", lambda p: H.truncated(H.save(Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)), p / "cut.png")),
     r"cut\.png: cannot decode the image: truncated or damaged PNG \("),
    ("truncated JPEG", lambda p: H.truncated(H.save(Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)), p / "cut.jpg",
        format="JPEG")), r"cut\.jpg: cannot decode the image: truncated or damaged JPEG "
                         r"\(image file is truncated"),
    ("TIFF named .png", lambda p: H.save(Image.fromarray(H.gray()), p / "a.png", format="TIFF"),
     r"a\.png: cannot decode the image: not a PNG or JPEG file"),
    (".mhd declaring 30000 x 30000, sparse 900 MB .raw",
     lambda p: H.write_mhd(p / "huge.mhd", "30000 30000", n=900_000_000), r"huge\.mhd: its header "
                                                                         + _BIG),
    (".mhd 3-D, 4 slices", lambda p: H.write_mhd(p / "vol.mhd", "64 48 4", n=64 * 48 * 4),
     r"vol\.mhd: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 4\)"),
    (".mhd 2-D", lambda p: H.write_mhd(p / "a.mhd", "64 48", data=H.gray().tobytes()), H.gray()),
    ("NIfTI 3-D, one slice", lambda p: H.write_nifti(p / "a.nii", (64, 48, 1), H.gray().tobytes()),
     H.gray()),
    ("NIfTI 3-D, 5 slices", lambda p: H.write_nifti(p / "vol.nii", (64, 48, 5)),
     r"vol\.nii: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 5\)"),
    ("NIfTI 4-D, 1 slice x 1 frame", lambda p: H.write_nifti(p / "a.nii", (64, 48, 1, 1),
                                                          H.gray().tobytes()), H.gray()),
    ("NIfTI 4-D, 1 slice x 3 frames", lambda p: H.write_nifti(p / "seq.nii", (64, 48, 1, 3)),
     r"seq\.nii: expected a 2-D image \(or 3-D with one slice\), got size \(64, 48, 1, 3\)"),
    ("NIfTI declaring 30000 x 30000, sparse", lambda p: H.write_nifti(p / "huge.nii",
                                                                    (30000, 30000)),
     r"huge\.nii: its header " + _BIG),
    ("NIfTI.gz declaring 30000 x 30000 (1 KB of data)", lambda p: H.gzipped(H.write_nifti(
        p / "huge.nii", (30000, 30000), bytes(1000))), r"huge\.nii\.gz: its header " + _BIG),
    ("int array of 0s and 1s", lambda p: np.array([[0, 1], [1, 0]], np.int64),
     np.array([[0, 1], [1, 0]], np.uint8)),
    ("int array of 1s", lambda p: np.ones((2, 2), np.int32), np.ones((2, 2), np.uint8)),
    ("float array in [0, 1]", lambda p: np.array([[0, 0.5], [1, 0]], np.float32),
     np.array([[0, 128], [255, 0]], np.uint8)),
    ("uint16 array 0..4000", lambda p: np.array([[0, 1000], [4000, 2000]], np.uint16),
     np.array([[0, 64], [255, 128]], np.uint8)),
    ("int RGB array 0..255", lambda p: np.dstack([H.gray().astype(np.int64)] * 3), H.gray()),
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


# ------------------------------------------------------------------ 4. a folder granting trust


class _RunsCode:
    """Unpickled, it creates the folder ``path``: proof that loading ran code from a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (str(self.path),)


def _zero_shot_folder(root: Path, folder_trusts: bool) -> tuple[Path, Path]:
    """A complete zero-shot CRIS run folder whose config names, as its pretrained weights,
    a pickle that runs code when unpickled; ``folder_trusts``: its config.json says
    ``trust_weights: true``. Returns the folder and the path the code would create."""
    import torch

    from echo_vlsm.grid import file_records, run_files
    from echo_vlsm.train import TrainConfig

    ran = root / "code-ran"
    weights = root / "weights" / "rn50.pt"
    weights.parent.mkdir(parents=True)
    torch.save({"state_dict": {"visual.conv1.weight": _RunsCode(ran)}}, weights)
    run = root / "cris_zeroshot_trained_p1"
    run.mkdir()
    config = TrainConfig(model="cris", size="tiny", strategy="zeroshot", prompt="p1",
                         pretrained=str(weights), trust_weights=folder_trusts, device="cpu")
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "history.csv").write_text("epoch\n")
    (run / "metrics.csv").write_text("sample\n")
    summary = {"done": True, "files": file_records(run, run_files("zeroshot"))}
    (run / "summary.json").write_text(json.dumps(summary))
    return run, ran


def _load(run: Path, caller: str, capsys) -> str:
    """Load the run the way ``caller`` says; the error (or CLI message) a user sees."""
    from echo_vlsm.cli import main
    from echo_vlsm.inference import load_model

    if caller.startswith("echo-vlsm segment"):
        image = run / "a.png"
        io.write_png(image, np.zeros((8, 8), np.uint8))
        flags = ["--trust-weights"] if "--trust-weights" in caller else []
        code = main(["segment", str(run), str(image), "--prompt", "x", "--device", "cpu",
                     *flags])
        assert code == 2
        return capsys.readouterr().err
    with pytest.raises(ValueError) as info:
        load_model(run, device="cpu", trust_weights="trust_weights=True" in caller)
    return str(info.value)


_REFUSED = (r"config\.json: this zero-shot run's pretrained weights can only be read by "
            r"running code stored in them \(.*rn50\.pt holds more than tensors .*\)\. A model "
            r"folder's config\.json cannot allow that; if you trust the file, say so yourself: "
            r"echo-vlsm segment --trust-weights")
_RAN = r"rn50\.pt: entries that are not tensors: \['visual\.conv1\.weight'\]"

#: (case, the folder's trust_weights, how the caller loads it, did the file's code run?,
#: what the user sees). The rows where the caller trusts are the controls: the same folder
#: reaches the unpickling, which runs the file's code.
TRUST_CASES = [
    ("folder trusts, load_model", True, "load_model", False, _REFUSED),
    ("folder trusts, echo-vlsm segment", True, "echo-vlsm segment", False, _REFUSED),
    ("folder does not, load_model", False, "load_model", False, _REFUSED),
    ("control: load_model(trust_weights=True)", False, "load_model(trust_weights=True)",
     True, _RAN),
    ("control: echo-vlsm segment --trust-weights", False,
     "echo-vlsm segment --trust-weights", True, _RAN),
]


@pytest.mark.parametrize("case, folder_trusts, caller, runs_code, expected", TRUST_CASES,
                         ids=[c[0] for c in TRUST_CASES])
def test_a_model_folder_cannot_grant_itself_unpickling(tmp_path, capsys, case, folder_trusts,
                                                       caller, runs_code, expected):
    run, ran = _zero_shot_folder(tmp_path, folder_trusts)
    seen = _load(run, caller, capsys)
    assert re.search(expected, seen, re.DOTALL), seen
    assert ran.exists() is runs_code


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
