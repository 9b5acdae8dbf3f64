"""Bridge Attention (BA-Net, BAv1 and BAv2) for PyTorch and timm.

Importing the package registers its models with timm, so ``timm.create_model("bav2_resnet50")`` works.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import models as _models  # noqa: F401  (registers the models)
from .bridge import BridgeAttention, FusedBridgeAttention
from .errors import UserError
from .models import create_model, list_models, model_families

__version__ = "0.1.0"

# Public functions that live in heavier modules, imported on first use.
_LAZY: dict[str, str] = {
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
    "BridgeAttention",
    "FusedBridgeAttention",
    "UserError",
    "create_model",
    "list_models",
    "model_families",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bridgeattn' has no attribute {name!r}")
