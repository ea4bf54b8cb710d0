"""Atomic writes, PNG round trips, root-relative paths and the process pool helper."""

import numpy as np
import pytest

from echo_vlsm.io import atomic_path, read_png, write_json_atomic, write_png
from echo_vlsm.parallel import process_pool
from echo_vlsm.paths import project_root, resolve


def test_png_round_trip(tmp_path):
    a = (np.arange(60, dtype=np.uint8).reshape(6, 10) * 4).astype(np.uint8)
    write_png(tmp_path / "sub" / "a.png", a)
    np.testing.assert_array_equal(read_png(tmp_path / "sub" / "a.png"), a)


def test_write_png_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "a.png", np.zeros((4, 4), dtype=np.float32))
    assert not (tmp_path / "a.png").exists()


def test_png_compression_levels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 48), dtype=np.uint8)  # speckle-like: hard to compress
    a[:32] = 7  # and a flat half that compresses well
    sizes = {}
    for level in (None, 0, 1, 9):
        path = tmp_path / f"a{level}.png"
        write_png(path, a, compression=level)
        np.testing.assert_array_equal(read_png(path), a)
        sizes[level] = path.stat().st_size
    assert sizes[0] > sizes[1] >= sizes[9]
    for bad in (10, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="zlib level"):
            write_png(tmp_path / "b.png", a, compression=bad)
    assert not (tmp_path / "b.png").exists()


def _threads(_):
    import cv2
    import SimpleITK as sitk

    return cv2.getNumThreads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()


def test_process_pool_workers_run_one_thread():
    with process_pool(2) as pool:
        assert list(pool.map(_threads, range(2))) == [(1, 1), (1, 1)]
    with pytest.raises(ValueError, match="workers"):
        process_pool(0)


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
