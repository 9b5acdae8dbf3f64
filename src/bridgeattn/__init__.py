"""Bridge Attention (BA-Net, BAv1 and BAv2) for PyTorch and timm.

Importing the package registers its models with timm, so ``timm.create_model("bav2_resnet50")`` works. The import
itself is light (no torch): the public names load on first use, and the models register as soon as timm is
imported (see ``_timm_hook``), which lets the command line answer ``--help`` at once.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from . import _timm_hook
from .errors import UserError

try:
    __version__ = version("bridgeattn")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_timm_hook.install()

if TYPE_CHECKING:  # the public API as IDEs and type checkers read it; at run time each name loads on first use
    from .bridge import BridgeAttention, FusedBridgeAttention
    from .convert import convert_official_state_dict
    from .data import DataConfig, build_datasets
    from .detection import create_detector, create_fpn_backbone, create_segmentation_model
    from .engine import LaunchOptions, TrainConfig, evaluate, train
    from .freeze import freeze_bn
    from .fusion import fuse
    from .hub import from_pretrained, save_pretrained
    from .loading import load_model
    from .models import create_model, list_models, model_families
    from .safe_load import load_file
    from .warmstart import from_plain

# Public names that live in heavier modules, imported on first use (the same names as the block above;
# tests/test_package.py keeps the two in step).
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

__all__ = [
    "BridgeAttention", "DataConfig", "FusedBridgeAttention", "LaunchOptions", "TrainConfig", "UserError",
    "__version__", "build_datasets", "convert_official_state_dict", "create_detector", "create_fpn_backbone",
    "create_model", "create_segmentation_model", "evaluate", "freeze_bn", "from_plain", "from_pretrained", "fuse",
    "list_models", "load_file", "load_model", "model_families", "save_pretrained", "train",
]


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
