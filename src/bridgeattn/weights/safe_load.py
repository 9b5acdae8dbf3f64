"""Reading weights files without running code from them, and fitting their state dicts to a model.

``torch.load(weights_only=True)`` refuses a pickle that would import or call anything; ``unsafe=True`` (trusted
files) comes only from the caller, never from a file. A file is recognised by its content: anything but a
``torch.save`` archive, a legacy pickle or safetensors (empty, random bytes) is "not a checkpoint", not "may run code".
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from timm.models import clean_state_dict

from ..errors import UserError, first_line, preview_keys

__all__ = ["UNSAFE_HINT", "load_file", "load_state_dict_strict", "safetensors_metadata", "state_dict_from"]

UNSAFE_HINT = "it may run code when loaded; if you trust its source, pass --unsafe-load (unsafe=True in Python)"
# What torch.save writes first in its legacy (non-zip) format: the pickled magic number, protocol 2.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
# Containers of a state dict, in timm's order (``timm.models.load_state_dict``), plus the reference
# BA-Net and torchvision scripts' ``model_state_dict``.
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")
_EMA_KEYS = ("ema", "state_dict_ema", "model_ema")
# Globals a weights_only load may rebuild besides tensors and containers: each only holds attributes, none calls
# anything (timm's train.py stores its ``args``, an argparse.Namespace, in every checkpoint; timm allows it too).
SAFE_GLOBALS = [argparse.Namespace]


def _kind(path: Path) -> str:
    """``"torch"``, ``"safetensors"``, ``"empty"`` or ``"unknown"``, from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_MAGIC):
        return "torch"
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= os.path.getsize(path):
        return "safetensors"
    return "unknown"


def _runs_code(path: Path, exc: BaseException) -> bool:
    """Whether a weights_only refusal was about a pickle global (code), rather than a malformed file."""
    try:
        if torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
            return True
    except Exception:  # legacy format: only the refusal's message tells ("Unsupported global: GLOBAL x.y",
        pass  # "unsupported GLOBAL x.y whose module x is blocked")
    return "GLOBAL" in str(exc)


def load_file(path: str | os.PathLike[str], unsafe: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.safetensors`` file (as a state dict) or a torch pickle with ``weights_only=True``; a one-line
    ``UserError`` for a missing, empty, truncated or unrecognised file and, unless ``unsafe``, code in a pickle."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    kind = _kind(path)
    if kind == "empty":
        raise UserError(f"{path} is empty (0 bytes): not a checkpoint")
    if kind == "safetensors" or (path.suffix == ".safetensors" and kind != "torch"):
        try:
            return load_safetensors(str(path), device=str(map_location))
        except Exception as exc:  # SafetensorError and friends, from a file that is cut short or garbled
            raise UserError(f"{path} is not a readable .safetensors file ({first_line(exc)})") from None
    if kind == "unknown":
        raise UserError(f"{path} is not a checkpoint (neither a torch.save file nor safetensors)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):  # scoped to this load, not process-wide
            return torch.load(path, map_location=map_location, weights_only=not unsafe)
    except pickle.UnpicklingError as exc:
        if not unsafe and _runs_code(path, exc):
            raise UserError(f"refused to load {path}: {UNSAFE_HINT}") from None
        detail = first_line(exc) if unsafe else "it is damaged, or not a weights file"
        raise UserError(f"{path} is not a readable torch checkpoint ({detail})") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as exc:
        raise UserError(f"{path} is truncated or not a torch checkpoint ({first_line(exc)})") from None


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The string metadata of a file :func:`load_file` read, with JSON values decoded (``{}`` when it has none or
    is not safetensors)."""
    if _kind(Path(path)) != "safetensors":
        return {}
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def state_dict_from(obj: Any, use_ema: bool = False, source: str = "the file") -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint (bare, or under a key of :data:`_STATE_DICT_KEYS`, :data:`_EMA_KEYS` with
    ``use_ema``), less DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes (timm's ``clean_state_dict``)."""
    if isinstance(obj, Mapping):
        keys = _EMA_KEYS if use_ema else _STATE_DICT_KEYS
        found = next((k for k in keys if isinstance(obj.get(k), Mapping)), None)
        if found is not None:
            obj = obj[found]
        elif use_ema:
            raise UserError(f"{source} holds no EMA weights (trained without --ema)")
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{source} holds no state dict (expected tensors by name, or a checkpoint with 'model' "
                        "or 'state_dict')")
    return clean_state_dict(dict(obj))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
                           ) -> None:
    """``model.load_state_dict(state_dict, strict=True)``; a ``UserError`` naming the missing, unexpected and
    mis-shaped keys (nothing loaded) when the state dict does not fit."""
    own = model.state_dict()
    problems = {
        f"missing in the {source}": [k for k in own if k not in state_dict],
        "not in the model": [k for k in state_dict if k not in own],
        "shape (file vs model)": [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                                  if k in state_dict and state_dict[k].shape != v.shape],
    }
    if any(problems.values()):
        parts = [f"{what}: {preview_keys(keys)}" for what, keys in problems.items() if keys]
        raise UserError(f"the {source} does not fit {type(model).__name__}: " + "; ".join(parts)
                        + " (check --model: depth, bav1 vs bav2, --num-classes)")
    model.load_state_dict(state_dict, strict=True)
