"""One run per folder: an exclusive lock on ``RUN/.lock`` held for the life of a run.

The lock is an ``fcntl.flock`` on the file, so the kernel drops it when the holder exits or is killed: a lock
left by a dead process is simply taken over, with no stale-lock guessing. The file's text (``pid host``) only
names the holder for the refusal message. Under ``bridgeattn train --nproc N`` the launcher holds the lock for all
ranks and tells them so through ``LOCK_ENV``; under plain torchrun rank 0 takes it.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import UserError

LOCK_FILE = ".lock"
# Set by the launcher for its torchrun workers: "PID" of the process holding the run folder's lock.
LOCK_ENV = "BRIDGEATTN_RUN_LOCK_PID"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


def _holder(path: Path) -> tuple[str, str]:
    """``(pid, host)`` written by the lock's holder ("?" where unreadable)."""
    try:
        pid, _, host = path.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    return pid or "?", host or "?"


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.lock`` exclusively, or raises ``UserError`` naming the holder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if fcntl is None or self.fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid, host = _holder(self.path)
            if pid == os.environ.get(LOCK_ENV) and host == socket.gethostname():
                return self  # our launcher holds it for all of its workers
            raise UserError(f"{self.folder} is in use by another run (pid {pid} on {host}); wait for it to end "
                            "or choose another --output") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        # the file stays: removing it would let a waiting process lock a file a third one can no longer see
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

