"""BA-EfficientNet: timm's EfficientNet with bridge gates in place of the SE of its MBConv (inverted residual) blocks,
r = 6 and Swish between the gate's layers (docs/spec.md, section 3; docs/placement.md). Blocks without an expansion
conv (timm's ``DepthwiseSeparableConv``) keep their SE. ``BAInvertedResidual`` is shared with BA-MobileNetV3.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual  # private: no public export

from .bridging import bridge_blocks, create_bridged, placement_gate

__all__ = ["BAInvertedResidual", "EFFICIENTNET_GATE", "InvertedResidual", "PreActSEDepthwiseSeparable",
           "create_mbconv_variant"]

EFFICIENTNET_GATE = dict(rd_ratio=1 / 6, act_layer="swish", gate_layer="sigmoid")


def _has_se(block: nn.Module) -> bool:
    return not isinstance(block.se, nn.Identity)


class BAInvertedResidual(InvertedResidual):
    """timm's ``InvertedResidual`` (MBConv) with a bridge gate instead of its SE (only blocks that have one).

    ``placement="se"``: taps = expansion and depthwise outputs ``(B, mid, H, W)``, the gate rescales the depthwise
    output where SE was (the BAv1 papers); ``"output"``: the projection output ``(B, out, H, W)`` is a tap too and
    the gate rescales it before the residual add (the BAv2 ResNet principle). ``pre_act=True`` (``"se"`` only)
    taps and gates the depthwise BatchNorm output before its activation, as the BAv1 MobileNetV3 reference does.
    ``init_std``: draw the gate's Linear weights from N(0, std) and zero their biases (``None``: PyTorch's init).
    """

    warm_start_replaces = "se"  # the plain twin's SE weights have no place here (models.warmstart)
    bridges = staticmethod(_has_se)

    def init_bridge(self, ba_args: dict[str, Any], placement: str = "se", pre_act: bool = False,
                    init_std: float | None = None) -> None:
        if pre_act and (placement != "se" or not isinstance(self.bn2, BatchNormAct2d)):
            raise ValueError("ba_pre_act needs ba_placement='se' and timm's BatchNormAct2d after the depthwise conv")
        if self.conv_s2d is not None:
            raise ValueError("bridge gates do not support space-to-depth MBConv blocks")
        self.se = nn.Identity()
        self.placement = placement
        self.pre_act = pre_act
        # With pre_act the depthwise activation moves behind the gate: bn2 keeps BatchNorm (+ drop) only.
        self.dw_act = nn.Identity()
        if pre_act:
            self.dw_act, self.bn2.act = self.bn2.act, nn.Identity()
        self.ba = placement_gate(placement, self.conv_dw.out_channels, self.conv_pwl.out_channels, ba_args)
        for layer in self.ba.modules() if init_std is not None else ():
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, 0.0, init_std)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def warm_start_scale(self) -> str:
        """What the gate rescales: ``bn3`` (output placement), the depthwise norm before its activation
        (``pre_act``), else the linear projection that reads the gated map."""
        if self.placement == "output":
            return "bn3"
        return "bn2" if self.pre_act else "conv_pwl"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y1 = self.bn1(self.conv_pw(x))
        y2 = self.bn2(self.conv_dw(y1))
        if not self.pre_act:
            y2 = self.aa(y2)
        if self.placement == "se":
            y2 = y2 * self.ba([y1.mean((2, 3)), y2.mean((2, 3))])
            if self.pre_act:
                y2 = self.aa(self.dw_act(y2))
            y3 = self.bn3(self.conv_pwl(y2))
        else:
            y3 = self.bn3(self.conv_pwl(y2))
            y3 = y3 * self.ba([y1.mean((2, 3)), y2.mean((2, 3)), y3.mean((2, 3))])
        if self.has_skip:
            y3 = self.drop_path(y3) + shortcut
        return y3


class PreActSEDepthwiseSeparable(DepthwiseSeparableConv):
    """timm's expansion-free block (only those with an SE) with the SE applied to the depthwise BatchNorm output
    before the activation, as the BAv1 MobileNetV3 reference orders it (timm applies SE after the activation)."""

    bridges = staticmethod(_has_se)

    def init_bridge(self) -> None:
        if not isinstance(self.bn1, BatchNormAct2d) or self.conv_s2d is not None:
            raise ValueError("ba_pre_act needs timm's BatchNormAct2d after the depthwise conv")
        self.dw_act, self.bn1.act = self.bn1.act, nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.dw_act(self.se(self.bn1(self.conv_dw(x)))))
        x = self.bn2(self.conv_pw(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


def create_mbconv_variant(variant: str, pretrained: bool, *, gate_defaults: dict[str, Any] = EFFICIENTNET_GATE,
                          pre_act: bool = False, gate_init_std: float | None = None, **kwargs: Any) -> nn.Module:
    """A timm MobileNetV3/EfficientNet twin with bridged MBConv blocks (:class:`BAInvertedResidual`), built by
    :func:`~bridgeattn.models.bridging.create_bridged`; ``pre_act`` and ``gate_init_std``: the family's defaults of
    ``ba_pre_act`` and ``ba_init_std``."""
    # The family's pre_act default holds only where the gate takes the SE's place.
    pre_act = kwargs.setdefault("ba_pre_act", pre_act and kwargs.get("ba_placement", "se") == "se")
    kwargs.setdefault("ba_init_std", gate_init_std)
    model = create_bridged(variant, pretrained, BAInvertedResidual, gate_defaults=gate_defaults, stem="conv_stem",
                           **kwargs)
    if pre_act:  # the expansion-free blocks keep their SE, in the same place as the gates: before the activation
        bridge_blocks(model, PreActSEDepthwiseSeparable, {})
    return model
