"""Dataset specs -> datasets: Fashion-MNIST (default), image folders, CIFAR, synthetic. See docs/data.md.

Names load on first use, so that ``DataConfig`` (a plain dataclass) can be read without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES: dict[str, str] = {
    "SPECS": ".build",
    "build_datasets": ".build",
    "loader_options": ".build",
    "DataConfig": ".config",
    "DataInfo": ".config",
    "Preprocessing": ".preprocessing",
    "eval_preprocessing": ".preprocessing",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    globals()[name] = value
    return value
