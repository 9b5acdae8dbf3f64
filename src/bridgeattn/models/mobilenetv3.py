"""BA-MobileNetV3: timm's MobileNetV3 with bridge gates in place of the SE of its inverted residual blocks.

BAv1 placement (docs/spec.md, section 3, and the BAv1 reference code): r = 6, ReLU between the gate's
layers, hard-sigmoid gate; taps = expansion output and depthwise BatchNorm output, gated before the depthwise
activation (``ba_pre_act=True``). Only blocks that had SE are bridged; the expansion-free first block keeps
its SE. The block class is :class:`bridgeattn.models.efficientnet.BAInvertedResidual`; see docs/placement.md.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .efficientnet import create_mbconv_variant

__all__ = ["MOBILENETV3_GATE", "MOBILENETV3_GATE_INIT_STD", "MOBILENETV3_TWINS", "create_mobilenetv3_variant"]

MOBILENETV3_GATE = dict(rd_ratio=1 / 6, act_layer=nn.ReLU, gate_layer="hard_sigmoid")
# The BAv1 MobileNetV3 reference initialises every Linear layer (the gates' among them) from N(0, 0.01).
MOBILENETV3_GATE_INIT_STD = 0.01

# bridged name -> (timm twin, BA version)
MOBILENETV3_TWINS: dict[str, tuple[str, str]] = {
    "bav1_mobilenetv3_large_100": ("mobilenetv3_large_100", "v1"),
    "bav2_mobilenetv3_large_100": ("mobilenetv3_large_100", "v2"),
    "bav1_mobilenetv3_small_100": ("mobilenetv3_small_100", "v1"),
    "bav2_mobilenetv3_small_100": ("mobilenetv3_small_100", "v2"),
}


def create_mobilenetv3_variant(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """One of :data:`MOBILENETV3_TWINS`, built as its timm twin with bridged blocks."""
    twin, version = MOBILENETV3_TWINS[variant]
    return create_mbconv_variant(
        variant, twin, version, pretrained, MOBILENETV3_GATE, True, gate_init_std=MOBILENETV3_GATE_INIT_STD, **kwargs
    )
