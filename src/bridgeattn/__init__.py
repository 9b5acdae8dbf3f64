"""Bridge Attention (BA-Net, BAv1 and BAv2) for PyTorch and timm.

Importing the package registers its models with timm, so ``timm.create_model("bav2_resnet50")`` works.
"""
from __future__ import annotations

from typing import Any

import timm
import torch.nn as nn

from . import models as _models  # noqa: F401  (registers the models)
from .bridge import BridgeAttention, FusedBridgeAttention
from .models import list_models, model_families

__version__ = "0.1.0"

__all__ = [
    "BridgeAttention",
    "FusedBridgeAttention",
    "create_model",
    "list_models",
    "model_families",
    "__version__",
]


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with this project's models registered; unknown names raise ``ValueError``."""
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[-1]}*")[:8] if name else []
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown model {name!r} (see `bridgeattn models`){hint}")
    return timm.create_model(name, pretrained=pretrained, **kwargs)
