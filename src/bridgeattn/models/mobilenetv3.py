"""BA-MobileNetV3: timm's MobileNetV3 with bridge gates in place of the SE of its inverted residual blocks.

BAv1 placement (SPEC section 3, the BAv1 reference): r = 6, ReLU between the gate's layers, hard-sigmoid
gate; taps = expansion output and depthwise BatchNorm output, gated before the depthwise activation
(``ba_pre_act=True``). Only blocks that had SE are bridged; the expansion-free first block keeps its SE.
The block class is :class:`bridgeattn.models.efficientnet.BAInvertedResidual`; see docs/placement.md.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._bridged import twin_cfg
from .efficientnet import create_mbconv_variant
from .registry import register_family

__all__ = ["MOBILENETV3_GATE"]

MOBILENETV3_GATE = dict(rd_ratio=1 / 6, act_layer=nn.ReLU, gate_layer="hard_sigmoid")

_TWINS = {
    "bav1_mobilenetv3_large_100": ("mobilenetv3_large_100", "v1"),
    "bav2_mobilenetv3_large_100": ("mobilenetv3_large_100", "v2"),
    "bav1_mobilenetv3_small_100": ("mobilenetv3_small_100", "v1"),
    "bav2_mobilenetv3_small_100": ("mobilenetv3_small_100", "v2"),
}

default_cfgs = generate_default_cfgs({name: twin_cfg(twin) for name, (twin, _) in _TWINS.items()})


def _create(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    twin, version = _TWINS[variant]
    return create_mbconv_variant(variant, twin, version, pretrained, MOBILENETV3_GATE, True, **kwargs)


@register_model
def bav1_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Large 1.0 with BAv1 gates (r = 6, hard-sigmoid)."""
    return _create("bav1_mobilenetv3_large_100", pretrained, **kwargs)


@register_model
def bav2_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Large 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."""
    return _create("bav2_mobilenetv3_large_100", pretrained, **kwargs)


@register_model
def bav1_mobilenetv3_small_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Small 1.0 with BAv1 gates (r = 6, hard-sigmoid)."""
    return _create("bav1_mobilenetv3_small_100", pretrained, **kwargs)


@register_model
def bav2_mobilenetv3_small_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Small 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."""
    return _create("bav2_mobilenetv3_small_100", pretrained, **kwargs)


BRIDGE_MOBILENETV3 = register_family("bridge-mobilenetv3", list(_TWINS))
