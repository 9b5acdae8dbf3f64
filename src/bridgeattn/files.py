"""Atomic file writes: a reader (or a crash, or a full disk) sees the old file or the new one, never half of one.

Every file the package writes goes through ``atomic_path``: a hidden temp file beside the target
(``.NAME.bridgeattn-tmp-PID``), flushed, then ``os.replace``d over it. Only temp names of that form are ever
cleaned up: a user's own ``.notes.tmp-1`` is not the package's to delete.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import UserError

TEMP_MARK = ".bridgeattn-tmp-"
_TEMP_NAME = re.compile(rf"\..+{re.escape(TEMP_MARK)}\d+")


def temp_path(path: Path) -> Path:
    """The temp file ``path`` is written through: hidden, in the same folder, named after this process."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def is_temp(path: Path) -> bool:
    """Whether ``path`` is a temp file left by ``atomic_path`` (e.g. after a kill mid-write), by its name alone."""
    return _TEMP_NAME.fullmatch(path.name) is not None


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder: to make a rename in it durable) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s new content to; on success it replaces ``path``, else it is removed.
    For writers that take a file name (``yaml`` dumps, ``torch.onnx.export``, ...); see ``atomic_write``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left by a failed write (exists() misses a dangling symlink)
    with contextlib.suppress(OSError):  # some file systems cannot open or flush a folder
        _fsync(path.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a binary temp file beside ``path``, then atomically rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def publish_mode(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode a newly created file gets (0644 under the usual umask). Writers that create
    private files (safetensors: 0600) are followed by this, so exported weights are readable like every other file."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically; non-finite floats become ``null`` (valid JSON)."""
    write_text(path, json.dumps(_finite(data), indent=1) + "\n")


def write_csv(path: str | os.PathLike[str], columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts; keys beyond ``columns`` are left out) as a CSV table to ``path`` atomically."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, table.getvalue())


def _finite(value: Any) -> Any:
    """``value`` with NaN/Inf floats replaced by None, so every JSON reader accepts the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files ``atomic_path`` left in ``folder`` (call only while no other process writes there)."""
    removed = [path for path in folder.glob("*") if is_temp(path) and (path.is_file() or path.is_symlink())]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def check_writable(path: str | os.PathLike[str], *, folder: bool = False, flag: str = "--output") -> Path:
    """Refuse, as one ``UserError`` line and before any work, an output location that cannot be written.

    ``folder``: ``path`` is a folder to create or fill, else a file to (re)write. The kernel judges (read-only file
    systems, ``/proc``, permissions) by a temp file created and removed in the nearest existing ancestor.
    """
    path = Path(path)
    if folder and os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{flag} {path}: a file is in the way (expected a folder)")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder (expected a file name)")
    ancestor = (path if folder and path.is_dir() else path.parent).absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag} {path}: {ancestor} is a file, so no folder can be created in it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".bridgeattn-probe-", dir=ancestor)
    except OSError as exc:
        raise UserError(f"{flag} {path} cannot be written: no file can be created in {ancestor} "
                        f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def cache_dir() -> Path:
    """The cache folder (decoded data sets, downloads): ``$BRIDGEATTN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/bridgeattn``, else ``~/.cache/bridgeattn``."""
    if os.environ.get("BRIDGEATTN_CACHE_DIR"):
        return Path(os.environ["BRIDGEATTN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bridgeattn"
