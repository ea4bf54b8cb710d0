"""Small I/O helpers shared by every step: atomic writes and 8-bit PNG files.

Every file the project writes goes through a temporary file in the same folder and an
``os.replace``, so an interrupted run never leaves a half-written file behind. A run killed
mid-write (SIGKILL: no ``finally`` runs) leaves the temporary file
``.<name>.<pid>@<host>-<random>.tmp``; ``clean_temp_files`` removes such files, and each job
calls it when it starts again. ``<host>`` (``host_tag()``) tells the machines sharing a project
folder apart: a temporary file is removed at once only when this machine wrote it and its
writer is dead; another machine's (whose pids mean nothing here), or one of an older version
(no ``@<host>``), only once it is older than ``TEMP_MAX_AGE_S``.
The final file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the
umask), not the ``0o600`` of a temporary file, so a shared project folder stays readable.

Examples::

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> write_text_atomic(folder / "a.txt", "hi")
    >>> left = folder / f".a.txt.99999999@{host_tag()}-x1y2z3.tmp"  # its writer is dead
    >>> _ = left.write_text("left by a kill")
    >>> _ = (folder / ".b.txt.99999999@0123456789ab-x1y2z3.tmp").write_text("another host's")
    >>> [p.name for p in clean_temp_files(folder)]
    ['.a.txt.99999999@...-x1y2z3.tmp']
    >>> sorted(p.name for p in folder.iterdir())
    ['.b.txt.99999999@0123456789ab-x1y2z3.tmp', 'a.txt']
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from echo_vlsm.imaging import ImageError, check_image_size

#: The name of an atomic write's temporary file: ``.<name>.<pid>@<host>-<random>.tmp``; files
#: of older versions lack the ``@<host>`` (and the oldest the ``<pid>-`` too).
TEMP_PATTERN = re.compile(
    r"^\..+\.(?:(?P<pid>\d+)(?:@(?P<host>[0-9a-f]{12}))?-)?[A-Za-z0-9_]{6,}\.tmp$")
#: The environment variable that, when set, is this machine's identity instead of its host
#: name and boot id (tests give two processes two identities; a site may set it where host
#: names repeat).
HOST_ID_ENV = "ECHO_VLSM_HOST_ID"
#: Seconds since its last change after which a temporary file that this machine cannot judge
#: (another host's, or without a host in its name) counts as abandoned: 24 hours, far longer
#: than any atomic write takes.
TEMP_MAX_AGE_S = 24 * 3600


@functools.lru_cache(maxsize=1)
def _machine_identity() -> str:
    """Host name, boot id and pid namespace: two processes agree on it exactly when their
    pids can be compared (same machine, same boot, same pid namespace)."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else
                         Path(source).read_text().strip())
        except OSError:  # not Linux: the host name alone
            parts.append("")
    return "/".join(parts)


def host_identity() -> str:
    """This machine's identity: ``$ECHO_VLSM_HOST_ID`` when set, else its host name, boot id
    and pid namespace."""
    return os.environ.get(HOST_ID_ENV) or _machine_identity()


def host_tag() -> str:
    """The 12 hex digits of ``host_identity()`` that temporary file names carry."""
    return hashlib.sha256(host_identity().encode()).hexdigest()[:12]


def _proc_umask() -> int | None:
    """The umask from the ``Umask:`` line of ``/proc/self/status`` (Linux 4.7 and later),
    read without changing it; None where there is no such line."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        return None
    return None


_UMASK_LOCK = threading.Lock()


def _umask_by_setting() -> int:
    """The umask read the portable way: set it and set it back, under a lock; files another
    thread creates meanwhile get the stricter ``0o077``, never a looser mode."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


#: Without ``/proc``: the umask read once, when this module is imported.
_IMPORT_UMASK: int | None = None if _proc_umask() is not None else _umask_by_setting()


def _umask() -> int:
    """The process umask, read without changing it: from ``/proc/self/status``, or where that
    is missing, the umask this module saw when it was imported."""
    mask = _proc_umask()
    if mask is not None:
        return mask
    return _IMPORT_UMASK if _IMPORT_UMASK is not None else _umask_by_setting()


def default_mode() -> int:
    """The mode a plain ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary file is ``.<name>.<pid>@<host>-<random>.tmp`` (``TEMP_PATTERN``; a kill
    leaves it, ``clean_temp_files`` removes it); the final file has ``default_mode()``.

    Examples::

        with atomic_path("out/model.safetensors") as tmp:
            save_file(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}@{host_tag()}-",
                                suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():  # a writer may have replaced the file: chmod what is there
            os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - writers in C++/Rust report ENOSPC their own way
        if isinstance(exc, DiskFullError) or not _is_disk_full(exc, tmp.parent):
            raise
        tmp.unlink(missing_ok=True)  # before measuring what is free
        raise DiskFullError.from_cause(path, exc) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


#: What writers that raise no ``OSError`` say when the disk is full: safetensors (Rust's
#: "No space left on device (os error 28)"), torch's zip writer ("file write failed").
_FULL_TEXT = re.compile(r"no space left on device|disk quota exceeded|os error (?:28|122)\b",
                        re.IGNORECASE)
_WRITE_TEXT = re.compile(r"\bwrit(?:e|ing)\b", re.IGNORECASE)


def _is_disk_full(exc: BaseException, folder: Path) -> bool:
    """``ENOSPC`` or ``EDQUOT``; a writer's own error saying so (safetensors, torch); or a
    failed write reported without an errno (NumPy's ``tofile``: "N requested and M written";
    torch's "file write failed") while under 1 MiB is left where it wrote."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code in (errno.ENOSPC, errno.EDQUOT):
        return True
    if code is not None:
        return False
    text = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e is not None)
    if _FULL_TEXT.search(text):
        return True
    if not isinstance(exc, OSError) and not _WRITE_TEXT.search(text):
        return False  # an error of the writer's own, not of the disk
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


class DiskFullError(OSError):
    """A write that found its file system full (``ENOSPC``) or its quota spent (``EDQUOT``);
    the message names the file and the space free now. Nothing was written: the temporary file
    is gone and the file, if it existed, is the one it was (``errno`` is the original's)."""

    def __init__(self, path: str | os.PathLike, code: int, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(code, problem, str(path))

    @classmethod
    def from_cause(cls, path: Path, cause: BaseException) -> DiskFullError:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 1e6:.1f} MB free there now"
        except OSError as exc:
            free = f"free space unknown ({exc.strerror})"
        code = cause.errno if isinstance(cause, OSError) else None
        if code is None and re.search(r"quota|os error 122", str(cause), re.IGNORECASE):
            code = errno.EDQUOT
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        return cls(path, code or errno.ENOSPC,
                   f"{what} while writing it ({free}); nothing was written (the file, if it "
                   "existed, is unchanged): free some space and run the command again")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"

    def __reduce__(self):  # survives pickling across a process pool
        return (type(self), (str(self.path), self.errno, self.problem))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's process, or not a pid at all
    return True


def clean_temp_files(folder: str | os.PathLike, recursive: bool = False,
                     max_age: float = TEMP_MAX_AGE_S) -> list[Path]:
    """Remove the temporary files of atomic writes (``TEMP_PATTERN``) that a killed run left
    in ``folder`` (and its subfolders with ``recursive``); returns them.

    A file this machine wrote (``host_tag()`` in its name) goes when its writer is dead; one
    whose writer still runs (a write in progress), or of this very process, stays. A file of
    another machine sharing the folder, or of an older version (no host in its name), goes
    only when unchanged for ``max_age`` seconds: its writer may be alive elsewhere. Each job
    calls it when it starts: export, phantom writing, SDM training and synthesis, a training
    run's folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    here, now = host_tag(), time.time()
    removed = []
    for p in sorted(found):
        m = TEMP_PATTERN.match(p.name)
        if m is None or not (p.is_file() or p.is_symlink()):
            continue
        pid = m.group("pid")
        if m.group("host") == here and pid is not None:
            if int(pid) == os.getpid() or _alive(int(pid)):
                continue
        else:
            try:
                age = now - p.lstat().st_mtime
            except FileNotFoundError:
                continue  # its writer renamed it meanwhile
            if age < max_age:
                continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_png(path: str | os.PathLike, array: np.ndarray, compression: int | None = None) -> None:
    """Write a 2-D uint8 array as an 8-bit grayscale PNG, atomically.

    ``compression``: ``None`` encodes with Pillow at its default (zlib level 6); a zlib level
    0..9 encodes with OpenCV at that level. Level 1 (used by the dataset export) encodes
    speckled echo images 3-5x faster than Pillow's default, for files about 15 % larger.
    Either way the pixels read back identical.
    """
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected a 2-D uint8 array, got {array.dtype} {array.shape}")
    if compression is None:
        with atomic_path(path) as tmp:
            Image.fromarray(array, mode="L").save(tmp, format="PNG")
        return
    if isinstance(compression, bool) or compression not in range(10):
        raise ValueError(f"compression={compression!r}; expected None or a zlib level 0..9")
    import cv2

    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit grayscale PNG as a 2-D uint8 array; errors name the file. A file whose
    header declares more than ``imaging.MAX_IMAGE_PIXELS`` is refused before decoding."""
    try:
        with Image.open(path) as im:
            check_image_size(path, *im.size)
            gray = im if im.mode in ("L", "P", "1") else im.convert("L")
            return np.asarray(gray, dtype=np.uint8).copy()
    except (FileNotFoundError, ImageError):
        raise
    except Exception as exc:  # PIL raises many types for damaged files
        raise OSError(f"{path}: cannot read PNG ({exc})") from exc
