"""Hardening (issue 23): one table per section, each row a file this test damages itself and
what a user sees: the error (or warning) naming the file, or the value returned.

Sections: 6, the silent cases; 4, hostile images; 2, temporary files of several hosts on one
folder; 3, a full disk.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import pytest

from echo_vlsm import io
from echo_vlsm.analysis.loading import MetricsFormatError, stale_note, stale_runs
from echo_vlsm.analysis.report import BEYOND_BEGIN, BEYOND_END, update_report
from echo_vlsm.errors import PathError
from echo_vlsm.pipeline.locks import lock_holder

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
