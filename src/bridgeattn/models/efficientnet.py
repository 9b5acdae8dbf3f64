"""BA-EfficientNet: timm's EfficientNet with bridge gates in its MBConv (inverted residual) blocks.

``BAInvertedResidual`` subclasses timm's ``InvertedResidual`` and is shared with BA-MobileNetV3.
BAv1 placement (docs/spec.md, section 3, the BAv1 reference): in every block that has an expansion conv and
an SE module, the SE is replaced by a bridge gate over the expansion output and the depthwise output
(r = 6, Swish between the gate's layers for EfficientNet). Blocks without an expansion conv
(timm's ``DepthwiseSeparableConv``) keep their SE. See docs/placement.md.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import BatchNormAct2d
from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual  # private: no public export

from .bridging import bridge, bridge_blocks, create_bridged, pop_bridge_args

__all__ = [
    "BAInvertedResidual", "EFFICIENTNET_GATE", "InvertedResidual", "MBCONV_PLACEMENTS", "PreActSEDepthwiseSeparable",
    "create_mbconv_variant",
]

MBCONV_PLACEMENTS = ("se", "output")


class BAInvertedResidual(InvertedResidual):
    """timm's ``InvertedResidual`` (MBConv) with a bridge gate instead of its SE.

    Placements (``placement``):
        ``"se"``: taps = expansion output and depthwise output ``(B, mid, H, W)``; the gate rescales the
            depthwise output where SE was (the BAv1 papers).
        ``"output"``: taps also include the projection output ``(B, out, H, W)``, which the gate rescales
            before the residual add (the BAv2 ResNet principle).
    ``pre_act=True`` (``"se"`` only) taps and gates the depthwise BatchNorm output before its activation,
    as the BAv1 MobileNetV3 reference does. ``init_std``: draw the gate's Linear weights from N(0, std) (and zero
    their biases); ``None`` keeps PyTorch's defaults.
    """

    warm_start_replaces = "se"  # the plain twin's SE weights have no place here (models.warmstart)

    @staticmethod
    def bridges(block: nn.Module) -> bool:
        """Only the blocks that have an SE get a gate in its place."""
        return not isinstance(block.se, nn.Identity)

    def init_bridge(self, ba_args: dict[str, Any], placement: str = "se", pre_act: bool = False,
                    init_std: float | None = None) -> None:
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
        # With pre_act the depthwise activation moves behind the gate: bn2 keeps BatchNorm (+ drop) only.
        self.dw_act = nn.Identity()
        if pre_act:
            self.dw_act, self.bn2.act = self.bn2.act, nn.Identity()
        if placement == "se":
            self.ba = bridge([mid, mid], mid, ba_args)
        else:
            self.ba = bridge([mid, mid, out], out, ba_args)
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
    """timm's expansion-free block with its SE applied to the depthwise BatchNorm output before the activation,
    as the BAv1 MobileNetV3 reference orders it (timm applies SE after the activation)."""

    @staticmethod
    def bridges(block: nn.Module) -> bool:
        """Only blocks that have an SE change (they keep it, in the gates' place)."""
        return not isinstance(block.se, nn.Identity)

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


def create_mbconv_variant(
    variant: str,
    twin: str,
    version: str,
    pretrained: bool,
    gate_defaults: dict[str, Any],
    pre_act: bool,
    gate_init_std: float | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm MobileNetV3/EfficientNet twin with bridged MBConv blocks.

    ``gate_init_std``: initialise the gates' Linear weights from N(0, std) (before any pretrained weights load);
    ``None`` keeps PyTorch's defaults.

    Keyword arguments ``ba_placement`` (``"se"``/``"output"``), ``ba_pre_act`` and the gate settings
    (``rd_ratio``, ``act_layer``, ``gate_layer``, ``selection``, ...) configure the gates; all others
    go to timm's entrypoint (``num_classes``, ``in_chans``, ``features_only``, ``drop_path_rate``, ...).
    ``small_input=True`` makes the stem conv stride 1 (for 28-64 px images).
    """
    ba_args = pop_bridge_args(kwargs, version, gate_defaults)
    placement = kwargs.pop("ba_placement", "se")
    pre_act = kwargs.pop("ba_pre_act", pre_act if placement == "se" else False)
    init = dict(ba_args=ba_args, placement=placement, pre_act=pre_act, init_std=gate_init_std)
    model = create_bridged(variant, twin, pretrained, BAInvertedResidual, init, stem="conv_stem", **kwargs)
    if pre_act:  # the expansion-free blocks keep their SE, in the same place as the gates: before the activation
        bridge_blocks(model, PreActSEDepthwiseSeparable, {})
    return model


# BAv1 for EfficientNet: r = 6 and Swish between the gate's layers (docs/spec.md, section 3); sigmoid gate.
EFFICIENTNET_GATE = dict(rd_ratio=1 / 6, act_layer="swish", gate_layer="sigmoid")
