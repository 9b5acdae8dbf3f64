"""BA-EfficientNet: timm's EfficientNet with bridge gates in its MBConv (inverted residual) blocks.

``BAInvertedResidual`` subclasses timm's ``InvertedResidual`` and is shared with BA-MobileNetV3.
BAv1 placement (SPEC section 3, the BAv1 reference): in every block that has an expansion conv and
an SE module, the SE is replaced by a bridge gate over the expansion output and the depthwise output
(r = 6, Swish between the gate's layers for EfficientNet). Blocks without an expansion conv
(timm's ``DepthwiseSeparableConv``) keep their SE. See docs/placement.md.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d
from timm.models import generate_default_cfgs, register_model
from timm.models._efficientnet_blocks import InvertedResidual

from ._bridged import adopt, blocks_of, bridge, create_bridged, pop_bridge_args, twin_cfg
from .registry import register_family

__all__ = ["BAInvertedResidual", "MBCONV_PLACEMENTS", "bridge_mbconv", "create_mbconv_variant"]

MBCONV_PLACEMENTS = ("se", "output")


class BAInvertedResidual(InvertedResidual):
    """timm's ``InvertedResidual`` (MBConv) with a bridge gate instead of its SE.

    Placements (``placement``):
        ``"se"``: taps = expansion output and depthwise output ``(B, mid, H, W)``; the gate rescales the
            depthwise output where SE was (the BAv1 papers).
        ``"output"``: taps also include the projection output ``(B, out, H, W)``, which the gate rescales
            before the residual add (the BAv2 ResNet principle).
    ``pre_act=True`` (``"se"`` only) taps and gates the depthwise BatchNorm output before its activation,
    as the BAv1 MobileNetV3 reference does.
    """

    def init_bridge(self, ba_args: dict[str, Any], placement: str = "se", pre_act: bool = False) -> None:
        if placement not in MBCONV_PLACEMENTS:
            raise ValueError(f"ba_placement must be one of {list(MBCONV_PLACEMENTS)}, got {placement!r}")
        if pre_act and (placement != "se" or not isinstance(self.bn2, BatchNormAct2d)):
            raise ValueError("ba_pre_act needs ba_placement='se' and timm's BatchNormAct2d after the depthwise conv")
        if self.conv_s2d is not None:
            raise ValueError("bridge gates do not support space-to-depth MBConv blocks")
        mid, out = self.conv_dw.out_channels, self.conv_pwl.out_channels
        self.se = nn.Identity()
        self.placement = placement
        self.pre_act = pre_act
        if placement == "se":
            self.ba = bridge([mid, mid], mid, ba_args)
        else:
            self.ba = bridge([mid, mid, out], out, ba_args)

    def _depthwise(self, y1: torch.Tensor) -> torch.Tensor:
        """Depthwise conv + BatchNorm, with the activation only when it does not follow the gate."""
        y2 = self.conv_dw(y1)
        if self.pre_act:
            return self.bn2.drop(nn.BatchNorm2d.forward(self.bn2, y2))
        return self.aa(self.bn2(y2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y1 = self.bn1(self.conv_pw(x))
        y2 = self._depthwise(y1)
        if self.placement == "se":
            y2 = y2 * self.ba([y1.mean((2, 3)), y2.mean((2, 3))])
            if self.pre_act:
                y2 = self.aa(self.bn2.act(y2))
            y3 = self.bn3(self.conv_pwl(y2))
        else:
            y3 = self.bn3(self.conv_pwl(y2))
            y3 = y3 * self.ba([y1.mean((2, 3)), y2.mean((2, 3)), y3.mean((2, 3))])
        if self.has_skip:
            y3 = self.drop_path(y3) + shortcut
        return y3


def bridge_mbconv(model: nn.Module, ba_args: dict[str, Any], placement: str = "se", pre_act: bool = False) -> int:
    """Replace the SE of every timm ``InvertedResidual`` in ``model`` by a bridge gate; returns how many."""
    blocks = [b for b in blocks_of(model, InvertedResidual) if not isinstance(b.se, nn.Identity)]
    for block in blocks:
        adopt(block, BAInvertedResidual).init_bridge(ba_args, placement, pre_act)
    return len(blocks)


def create_mbconv_variant(
    variant: str,
    twin: str,
    version: str,
    pretrained: bool,
    gate_defaults: dict[str, Any],
    pre_act: bool,
    **kwargs: Any,
) -> nn.Module:
    """A timm MobileNetV3/EfficientNet twin with bridged MBConv blocks.

    Keyword arguments ``ba_placement`` (``"se"``/``"output"``), ``ba_pre_act`` and the gate settings
    (``rd_ratio``, ``act_layer``, ``gate_layer``, ``selection``, ...) configure the gates; all others
    go to timm's entrypoint (``num_classes``, ``in_chans``, ``features_only``, ``drop_path_rate``, ...).
    ``small_input=True`` makes the stem conv stride 1 (for 28-64 px images).
    """
    ba_args = pop_bridge_args(kwargs, version, gate_defaults)
    placement = kwargs.pop("ba_placement", "se")
    pre_act = kwargs.pop("ba_pre_act", pre_act if placement == "se" else False)
    return create_bridged(
        variant, twin, pretrained, lambda m: bridge_mbconv(m, ba_args, placement, pre_act), stem="conv_stem", **kwargs
    )


# BAv1 for EfficientNet: r = 6 and Swish between the gate's layers (SPEC section 3); sigmoid gate.
EFFICIENTNET_GATE = dict(rd_ratio=1 / 6, act_layer="swish", gate_layer="sigmoid")

default_cfgs = generate_default_cfgs({
    "bav1_efficientnet_b0": twin_cfg("efficientnet_b0"),
    "bav2_efficientnet_b0": twin_cfg("efficientnet_b0"),
})


@register_model
def bav1_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-B0 with BAv1 gates (taps: expansion and depthwise outputs; r = 6, Swish)."""
    return create_mbconv_variant(
        "bav1_efficientnet_b0", "efficientnet_b0", "v1", pretrained, EFFICIENTNET_GATE, False, **kwargs
    )


@register_model
def bav2_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-B0 with BAv2 gates (same taps as BAv1, adaptive selection; r = 6, Swish)."""
    return create_mbconv_variant(
        "bav2_efficientnet_b0", "efficientnet_b0", "v2", pretrained, EFFICIENTNET_GATE, False, **kwargs
    )


BRIDGE_EFFICIENTNETS = register_family("bridge-efficientnet", ["bav1_efficientnet_b0", "bav2_efficientnet_b0"])
