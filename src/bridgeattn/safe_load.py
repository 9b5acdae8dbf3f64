"""Loading weights and checkpoints without running code from the file.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers; a pickle that would import
or call anything is refused. ``unsafe=True`` is the explicit escape hatch for files from a trusted source.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

UNSAFE_HINT = (
    "it may run code when loaded; if you trust its source, pass --unsafe-load (unsafe=True in Python)"
)


def load_file(path: str | os.PathLike[str], unsafe: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Load a ``.safetensors`` file (as a state dict) or a torch pickle with ``weights_only=True``.

    Raises ``UserError`` for a missing file, and for a pickle that needs arbitrary code unless ``unsafe``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(str(path), device=str(map_location))
    try:
        return torch.load(path, map_location=map_location, weights_only=not unsafe)
    except pickle.UnpicklingError as exc:
        if unsafe:
            raise
        raise UserError(f"refused to load {path}: {UNSAFE_HINT} (detail: {str(exc).splitlines()[0]})") from None
    except (EOFError, RuntimeError) as exc:
        raise UserError(f"{path} is truncated or not a torch checkpoint ({str(exc).splitlines()[0]})") from None
