"""Checkpoints that survive crashes: atomic writes, a size + SHA-256 record, keep-last/best/N, RNG states.

Layout of ``RUN/checkpoints``::

    epoch-0003.pth        the state after epoch 3 (torch.save, loaded back with weights_only=True)
    epoch-0003.pth.json   {"size", "sha256", "epoch", "step"}: written after the checkpoint, so a checkpoint
                          without a matching record (killed mid-write, truncated, copied half-way) is never used
    last.pth, best.pth    relative symlinks to the newest and the best epoch file (conveniences only)

A new checkpoint and its record are complete before older ones are pruned, so a good one always exists.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..safe_load import load_file

CKPT_DIR = "checkpoints"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.pth$")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def check(path: Path) -> str | None:
    """``None`` when ``path`` matches its size/SHA-256 record, else why it must not be used."""
    record = record_path(path)
    if not path.is_file():
        return "missing"
    if not record.is_file():
        return "no checksum record (the write did not finish)"
    try:
        expected = json.loads(record.read_text())
        size, digest = int(expected["size"]), str(expected["sha256"])
    except (ValueError, KeyError, TypeError):
        return "unreadable checksum record"
    actual = path.stat().st_size
    if actual != size:
        return f"truncated or changed: {actual} bytes, expected {size}"
    if sha256(path) != digest:
        return "checksum mismatch (the file is corrupt)"
    return None


def _symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` (relative) atomically; skipped where symlinks are unsupported."""
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target.name)
        os.replace(tmp, link)
    except OSError:
        if tmp.is_symlink():
            tmp.unlink()


def epoch_files(folder: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the epoch checkpoints in ``folder``, newest first."""
    found = []
    for path in folder.glob("epoch-*.pth") if folder.is_dir() else []:
        match = _EPOCH_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def save_checkpoint(state: dict[str, Any], run_dir: Path, is_best: bool, keep: int = 0) -> Path:
    """Write ``state`` as ``checkpoints/epoch-NNNN.pth`` with its record, update last/best, prune old files.

    Kept: the newest, the best, and the ``keep`` newest older ones.
    """
    folder = run_dir / CKPT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    epoch = int(state["epoch"])
    path = folder / f"epoch-{epoch:04d}.pth"
    atomic_write(path, lambda f: torch.save(state, f))
    record = {"size": path.stat().st_size, "sha256": sha256(path), "epoch": epoch, "step": int(state["step"])}
    atomic_write_text(record_path(path), json.dumps(record))
    _symlink(folder / "last.pth", path)
    if is_best:
        _symlink(folder / "best.pth", path)
    best = (folder / "best.pth").resolve() if (folder / "best.pth").is_symlink() else None
    # files newer than this epoch belong to an abandoned attempt (a bad checkpoint, or a resume from further back)
    stale = [old for e, old in epoch_files(folder) if e > epoch]
    surplus = [old for e, old in epoch_files(folder) if e < epoch][keep:]
    for old in stale + [p for p in surplus if p.resolve() != best]:
        old.unlink(missing_ok=True)
        record_path(old).unlink(missing_ok=True)
    return path


def find_resume(run_dir: Path) -> Path | None:
    """The newest checkpoint in ``run_dir/checkpoints`` that passes its size/checksum check, warning about
    newer ones that do not; ``None`` when there is none."""
    for epoch, path in epoch_files(run_dir / CKPT_DIR):
        problem = check(path)
        if problem is None:
            return path
        warnings.warn(f"skipping checkpoint {path} (epoch {epoch}): {problem}; trying the previous one",
                      stacklevel=2)
    return None


def load_checkpoint(path: str | os.PathLike[str], unsafe: bool = False) -> dict[str, Any]:
    """Load a training checkpoint (weights_only unless ``unsafe``); its record is checked when present."""
    path = Path(path)
    if path.is_dir():
        found = find_resume(path if path.name != CKPT_DIR else path.parent)
        if found is None:
            raise UserError(f"{path}: no usable checkpoint in this run folder")
        path = found
    if record_path(path.resolve()).is_file():
        problem = check(path.resolve())
        if problem:
            raise UserError(f"checkpoint {path} cannot be used: {problem}")
    state = load_file(path, unsafe=unsafe)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{path} is not a bridgeattn training checkpoint (for weights alone use "
                        "bridgeattn.load_file or from_pretrained)")
    state["path"] = str(path)
    return state


# ------------------------------------------------------------------------------------------------ RNG states

def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states, in types weights_only loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
