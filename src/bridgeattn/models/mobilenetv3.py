"""BA-MobileNetV3: timm's MobileNetV3 with bridge gates in place of the SE of its inverted residual blocks.

BAv1 placement (docs/spec.md, section 3; docs/placement.md): r = 6, ReLU between the gate's layers, hard-sigmoid
gate; taps = expansion output and depthwise BatchNorm output, gated before the depthwise activation
(``ba_pre_act=True``). The expansion-free first block keeps its SE. Blocks: :mod:`bridgeattn.models.efficientnet`.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from .efficientnet import create_mbconv_variant

__all__ = ["MOBILENETV3_GATE", "MOBILENETV3_GATE_INIT_STD", "create_mobilenetv3_variant"]

MOBILENETV3_GATE = dict(rd_ratio=1 / 6, act_layer=nn.ReLU, gate_layer="hard_sigmoid")
# The BAv1 MobileNetV3 reference initialises every Linear layer (the gates' among them) from N(0, 0.01).
MOBILENETV3_GATE_INIT_STD = 0.01


def create_mobilenetv3_variant(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """A timm MobileNetV3 twin (``twin=``, ``version=``) with bridged blocks and the BAv1 MobileNetV3 gates."""
    return create_mbconv_variant(variant, pretrained, gate_defaults=MOBILENETV3_GATE, pre_act=True,
                                 gate_init_std=MOBILENETV3_GATE_INIT_STD, **kwargs)
