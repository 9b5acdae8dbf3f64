"""Bridge Attention (BA-Net, BAv1 and BAv2) for PyTorch and timm.

Importing the package registers its models with timm, so ``timm.create_model("bav2_resnet50")`` works. The import
itself is light (no torch): the public names load on first use, and the models register as soon as timm is
imported (see ``_timm_hook``), which lets the command line answer ``--help`` at once.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from . import _timm_hook
from .errors import UserError

try:
    __version__ = version("bridgeattn")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_timm_hook.install()

# Public functions that live in heavier modules, imported on first use.
_LAZY: dict[str, str] = {
    "BridgeAttention": "bridgeattn.bridge",
    "FusedBridgeAttention": "bridgeattn.bridge",
    "create_model": "bridgeattn.models",
    "list_models": "bridgeattn.models",
    "model_families": "bridgeattn.models",
    "fuse": "bridgeattn.fusion",
    "freeze_bn": "bridgeattn.freeze",
    "convert_official_state_dict": "bridgeattn.convert",
    "save_pretrained": "bridgeattn.hub",
    "from_pretrained": "bridgeattn.hub",
    "load_file": "bridgeattn.safe_load",
    "from_plain": "bridgeattn.warmstart",
    "load_model": "bridgeattn.loading",
    "TrainConfig": "bridgeattn.engine",
    "LaunchOptions": "bridgeattn.engine",
    "train": "bridgeattn.engine",
    "evaluate": "bridgeattn.engine",
    "DataConfig": "bridgeattn.data",
    "build_datasets": "bridgeattn.data",
    "create_detector": "bridgeattn.detection",
    "create_fpn_backbone": "bridgeattn.detection",
    "create_segmentation_model": "bridgeattn.detection",
}

__all__ = ["UserError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        try:  # a submodule used as an attribute: ``bridgeattn.models``
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'bridgeattn' has no attribute {name!r}") from None
    globals()[name] = value
    return value
