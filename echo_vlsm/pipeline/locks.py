"""One job, one process: an exclusive lock per job, held while it runs.

The lock is ``fcntl.flock`` on a file in the job's folder, which records who holds it (host,
pid, start time). The kernel releases it when its holder dies, however it dies, so a lock is
never left behind by a killed process and needs no lease on one machine. On a shared network
file system (NFS v4, Lustre, BeeGFS, GPFS) ``flock`` is a real lock across hosts where the
client supports it (Linux NFS clients emulate it with POSIX byte-range locks, which the server
releases when the holding client's lease expires); the README states this assumption. A
second process that finds a job locked leaves it to the holder: it waits for it, or goes on
with other jobs, and never runs it again or writes its files.

Examples::

    with JobLock(folder / ".job.lock") as lock:
        if lock.acquired:
            ...  # run the job
        else:
            print("held by", lock.holder())
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path


class JobLock:
    """A non-blocking exclusive lock on ``path`` (created as needed)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self.acquired = False

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; record this process as the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise OSError(exc.errno, f"{self.path}: cannot lock ({exc.strerror}); the runner "
                          "needs a file system with flock (see README, 'Clusters')") from exc
        record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd, self.acquired = fd, True
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # nobody holds it: the record goes with the lock
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd, self.acquired = None, False

    def holder(self) -> dict | None:
        """Who holds the lock (host, pid, since), or None when it is free."""
        if self.acquired:
            return {"host": socket.gethostname(), "pid": os.getpid()}
        return lock_holder(self.path)

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(path: str | os.PathLike) -> dict | None:
    """The holder of the lock at ``path``, or None when nobody holds it (the probe takes the
    lock for an instant when it is free)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder_record(os.pread(fd, 1 << 16, 0))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder_record(data: bytes) -> dict:
    """The record a holder wrote, as a dict that always has ``host`` and ``pid`` ("?" where
    the record lacks them); a record that is empty (being written), not JSON, or JSON but
    not an object gives ``{"host": "?", "pid": "?"}``: the lock is held, by someone unknown."""
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both are
        record = None
    unknown = {"host": "?", "pid": "?"}
    return {**unknown, **record} if isinstance(record, dict) else unknown
