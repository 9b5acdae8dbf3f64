"""Bridge Attention (BA-Net, BAv1 and BAv2) for PyTorch and timm.

Importing the package registers its models with timm, as ``import timm`` registers timm's own, so
``timm.create_model("bav2_resnet50")`` works after ``import bridgeattn``.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .config import LaunchOptions, TrainConfig
from .data import DataConfig, build_datasets
from .engine import evaluate, train
from .errors import UserError
from .layers.bridge import BridgeAttention, FusedBridgeAttention
from .layers.freeze import freeze_bn
from .layers.fusion import fuse
from .models import create_model, list_models, model_families  # registers the models with timm
from .models.detection import create_detector, create_fpn_backbone, create_segmentation_model
from .weights.convert import convert_official_state_dict
from .weights.hub import from_pretrained, save_pretrained
from .weights.loading import load_model
from .weights.safe_load import load_file
from .weights.warmstart import from_plain

try:
    __version__ = version("bridgeattn")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BridgeAttention", "DataConfig", "FusedBridgeAttention", "LaunchOptions", "TrainConfig", "UserError",
    "__version__", "build_datasets", "convert_official_state_dict", "create_detector", "create_fpn_backbone",
    "create_model", "create_segmentation_model", "evaluate", "freeze_bn", "from_plain", "from_pretrained", "fuse",
    "list_models", "load_file", "load_model", "model_families", "save_pretrained", "train",
]
