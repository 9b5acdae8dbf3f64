"""Checkpoints that survive crashes: atomic writes, a size + SHA-256 record, keep-last/best/N, RNG states.

``RUN/checkpoints/epoch-0003.pth`` (``epoch-0003-batch-000120.pth`` mid-epoch) is used only when its record
``epoch-0003.pth.json``, written after it, matches; ``last.pth``/``best.pth`` are relative symlinks;
``superseded/`` keeps what a resume from further back set aside. docs/training.md describes the rules.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..files import atomic_path, atomic_write, remove_stale_temps, write_text
from .safe_load import load_file

CKPT_DIR = "checkpoints"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?\.pth$")
Position = tuple[int, int]  # (completed epochs, batches of the next epoch done): the point a checkpoint holds


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def check(path: Path, finite: bool = False) -> str | None:
    """``None`` when ``path`` matches its size/SHA-256 record (with ``finite``: and the record says its weights
    and validation loss were finite), else why it must not be used."""
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
    if finite and expected.get("finite", True) is False:
        return "non-finite weights or validation loss"
    return None


def _symlink(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` (relative) atomically; skipped where symlinks are unsupported."""
    with contextlib.suppress(OSError), atomic_path(link) as tmp:
        tmp.unlink(missing_ok=True)  # left by a killed process of the same pid
        tmp.symlink_to(target.name)


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """``epoch-0003.pth`` after epoch 3; ``epoch-0003-batch-000120.pth`` 120 batches into epoch 4."""
    return f"epoch-{epoch:04d}.pth" if not batch else f"epoch-{epoch:04d}-batch-{batch:06d}.pth"


def epoch_files(folder: Path) -> list[tuple[Position, Path]]:
    """``((epoch, batch), path)`` of the checkpoints in ``folder``, newest first."""
    found = []
    for path in folder.glob("epoch-*.pth"):  # none when the folder does not exist
        if match := _EPOCH_FILE.match(path.name):
            found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
    return sorted(found, reverse=True)


def is_good(state: dict[str, Any], val_loss: float | None) -> bool:
    """Whether a checkpoint may be best or "last good": its weights, buffers and validation loss are finite."""
    tensors = [t for sd in (state["model"], state.get("ema") or {}) for t in sd.values() if torch.is_tensor(t)]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())
    return finite and (val_loss is None or math.isfinite(val_loss))


def save_checkpoint(state: dict[str, Any], run_dir: Path, is_best: bool, keep: int = 0, good: bool = True) -> Path:
    """Write ``state`` as ``checkpoints/epoch-NNNN.pth`` with its record, update last/best, prune old files:
    keep the newest, the best (``state["best_epoch"]`` and ``best.pth``'s target) and ``keep`` older ones. Newer
    files are left alone (``set_aside_newer`` moves them at resume); a non-``good`` one is never made best."""
    folder = run_dir / CKPT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    epoch, batch = int(state["epoch"]), int(state.get("batch", 0))
    path = folder / checkpoint_name(epoch, batch)
    written = False
    try:
        atomic_write(path, lambda f: torch.save(state, f))  # its temp file is removed on failure
        written = True
        record = {"size": path.stat().st_size, "sha256": sha256(path), "epoch": epoch, "step": int(state["step"]),
                  "batch": batch, "finite": bool(good)}
        write_text(record_path(path), json.dumps(record))
    except OSError as exc:  # a full disk: the older checkpoints are untouched, a resume continues from them
        if written:
            path.unlink(missing_ok=True)  # without its record it would never be used
        last, _ = _pick(run_dir, mid_epoch=True, finite_only=False)
        raise UserError(f"cannot write checkpoint {path}: {exc.strerror or exc}; the last good checkpoint is "
                        f"{last or 'none'}") from None
    _symlink(folder / "last.pth", path)
    best_epoch = int(state.get("best_epoch", 0))
    best_file = folder / checkpoint_name(best_epoch)
    if is_best and good:
        _symlink(folder / "best.pth", path)
    elif best_epoch and check(best_file) is None:
        _symlink(folder / "best.pth", best_file)  # repair a link a kill mid-save left behind
    protected = {p.resolve() for p in (best_file, folder / "best.pth") if p.exists()}
    surplus = [old for position, old in epoch_files(folder) if position < (epoch, batch)][keep:]
    for old in surplus:
        if old.resolve() not in protected:
            old.unlink(missing_ok=True)
            record_path(old).unlink(missing_ok=True)
    return path


def set_aside_newer(run_dir: Path, epoch: int, batch: int = 0) -> list[Path]:
    """Move the checkpoints after ``(epoch, batch)`` into ``checkpoints/superseded/`` (a resume from further
    back would otherwise overwrite them); re-point ``last.pth``/``best.pth`` away from moved files."""
    folder = run_dir / CKPT_DIR
    newer = [path for position, path in epoch_files(folder) if position > (epoch, batch)]
    if not newer:
        return []
    aside = folder / "superseded"
    aside.mkdir(exist_ok=True)
    for path in newer:
        for item in (path, record_path(path)):
            if item.exists():
                target, n = aside / item.name, 1
                while target.exists():
                    target, n = aside / f"{item.name}.{n}", n + 1
                os.replace(item, target)
    for link in (folder / "last.pth", folder / "best.pth"):
        if link.is_symlink() and not link.exists():
            link.unlink()
    return newer


def clean_temps(run_dir: Path) -> list[Path]:
    """Remove temp files a killed writer left in the run folder and its checkpoints (run lock held)."""
    return remove_stale_temps(run_dir) + remove_stale_temps(run_dir / CKPT_DIR)


def _pick(run_dir: Path, mid_epoch: bool, finite_only: bool) -> tuple[Path | None, list[str]]:
    """The one selection rule: the newest checkpoint in ``run_dir/checkpoints`` that matches its size/SHA-256
    record (with ``finite_only``, whose record says finite; without ``mid_epoch``, written at an epoch's end),
    and why each newer one was skipped."""
    skipped = []
    for (_, batch), path in epoch_files(run_dir / CKPT_DIR):
        if batch and not mid_epoch:  # written on an interruption mid-epoch: no validation measured these weights
            continue
        problem = check(path, finite=finite_only)
        if problem is None:
            return path, skipped
        skipped.append(f"{path.name} ({problem})")
    return None, skipped


def find_resume(run_dir: Path, good_only: bool = False) -> Path | None:
    """The checkpoint ``--resume auto`` continues from: the newest that passes its check, mid-epoch ones
    included (with ``good_only``: finite only); ``None`` when there is none. Skipped newer ones are warned about."""
    path, skipped = _pick(run_dir, mid_epoch=True, finite_only=good_only)
    if skipped and not good_only:
        warnings.warn(f"{run_dir}: skipped newer checkpoint(s) {'; '.join(skipped)}", stacklevel=2)
    return path


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run folder stands for when its weights are used (eval, export, ``--init-from``,
    ``from_plain``): the same rule, at an epoch's end and finite (the weights ``summary.json`` describes)."""
    path, skipped = _pick(run_dir, mid_epoch=False, finite_only=True)
    if path is None:
        raise UserError(f"{run_dir}: no usable checkpoint in this run folder (none complete, checksum-verified and "
                        f"finite){': ' if skipped else ''}{'; '.join(skipped)}")
    if skipped:
        warnings.warn(f"{run_dir}: skipped newer checkpoint(s) {'; '.join(skipped)}", stacklevel=2)
    return path


def read(path: Path, unsafe: bool = False) -> Any:
    """``load_file(path)``, refused when ``path`` has a size/SHA-256 record that it does not match."""
    resolved = path.resolve()  # a link's target, whose record is beside it
    if record_path(resolved).is_file() and (problem := check(resolved)):
        raise UserError(f"checkpoint {path} cannot be used: {problem}")
    return load_file(path, unsafe=unsafe)


def load_checkpoint(path: str | os.PathLike[str], unsafe: bool = False) -> dict[str, Any]:
    """Load a training checkpoint file (weights_only unless ``unsafe``); its record is checked when present.
    For a run folder, pick the file with :func:`find_resume` or :func:`run_checkpoint`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a checkpoint file (bridgeattn.load_model takes run folders)")
    state = read(path, unsafe=unsafe)
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
