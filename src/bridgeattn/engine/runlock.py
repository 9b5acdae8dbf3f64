"""One run per folder: an ``fcntl.flock`` on ``RUN/.lock`` for the life of a run, which the kernel drops when the
holder dies (no stale-lock guessing); the file's ``pid host`` only names the holder. A refused run leaves no trace
(docs/training.md, "The run folder")."""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from ..errors import UserError
from ..files import is_temp

LOCK_FILE = ".lock"
# Set by ``train --nproc`` for its torchrun workers: "PID" of the launcher, which holds the lock for all of them
# (under plain torchrun rank 0 takes it).
LOCK_ENV = "BRIDGEATTN_RUN_LOCK_PID"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.lock`` exclusively, or raises ``UserError`` naming the holder."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None
        self.created: list[Path] = []  # what acquire made: the lock file, then the new folders, deepest first

    def acquire(self) -> RunLock:
        if fcntl is None or self.fd is not None:
            return self
        created = [p for p in (self.path, self.folder, *self.folder.absolute().parents) if not p.exists()]
        while True:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                try:
                    pid, _, host = self.path.read_text().strip().partition(" ")
                except OSError:
                    pid, host = "", ""
                if pid == os.environ.get(LOCK_ENV) and host == socket.gethostname():
                    return self  # our launcher holds it for all of its workers
                raise UserError(f"{self.folder} is in use by another run (pid {pid or '?'} on {host or '?'}); wait "
                                "for it to end or choose another --output") from None
            with contextlib.suppress(FileNotFoundError):  # a failed run may have removed our file: lock anew
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    break
            os.close(fd)
        self.created = created
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

    def discard(self) -> None:
        """Release, removing the lock file and the folders ``acquire`` created where they hold nothing else."""
        if self.fd is None:
            return
        # the file first, while it is still locked (safe: ``acquire`` only keeps a lock on the file the path names)
        for path in self.created:
            try:
                path.unlink() if path == self.path else path.rmdir()
            except OSError:
                break
        self.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:  # refused or failed: leave no lock file and no empty folder behind
            self.discard()
        self.release()


def refuse_other_files(folder: Path) -> None:
    """``UserError`` when ``folder`` holds files (other than the lock and temp files) but no run: a user's folder is
    not filled unless ``--overwrite``."""
    others = sorted(p.name for p in folder.glob("*") if p.name != LOCK_FILE and not is_temp(p))  # [] if no folder
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"--output {folder} holds other files ({shown}) and no run; choose a new or empty folder, "
                        "or pass --overwrite to write the run among them")
