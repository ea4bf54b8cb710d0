"""Atomic writes, PNG round trips and root-relative paths."""

import numpy as np
import pytest

from echo_vlsm.io import atomic_path, read_png, write_json_atomic, write_png
from echo_vlsm.paths import project_root, resolve


def test_png_round_trip(tmp_path):
    a = (np.arange(60, dtype=np.uint8).reshape(6, 10) * 4).astype(np.uint8)
    write_png(tmp_path / "sub" / "a.png", a)
    np.testing.assert_array_equal(read_png(tmp_path / "sub" / "a.png"), a)


def test_write_png_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "a.png", np.zeros((4, 4), dtype=np.float32))
    assert not (tmp_path / "a.png").exists()


def test_damaged_png_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(OSError, match="bad.png"):
        read_png(bad)


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "x.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temp file left behind


def test_resolve_is_root_relative(tmp_path):
    root = project_root()
    assert (root / "pyproject.toml").is_file()
    assert resolve("data/phantom") == root / "data" / "phantom"
    assert resolve(tmp_path) == tmp_path
    assert project_root(root / "notebooks") == root
