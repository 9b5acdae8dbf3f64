"""ResNet baselines with the attention modules timm lacks: FcaNet (``fca_``), Coordinate Attention (``ca_``)
and SRM (``srm_``), on the same trunk (stem, init, small-input variants) as the BA and timm-attention models.

Each family has ``{prefix}resnet{18,34,50,101,152}`` and the small-input ``{prefix}resnet{20,56}``. The module
sits where timm puts SE: on the last conv output of every block, before the residual add.
"""
from __future__ import annotations

from ..attention import CoordAttention, FcaModule, SrmModule
from .registry import register_family
from .resnet import register_resnet_family

__all__ = ["EXTRA_BASELINE_MODELS"]

EXTRA_BASELINE_MODELS = register_family(
    "baseline-resnet",
    register_resnet_family("fca_", FcaModule)
    + register_resnet_family("ca_", CoordAttention)
    + register_resnet_family("srm_", SrmModule),
)
