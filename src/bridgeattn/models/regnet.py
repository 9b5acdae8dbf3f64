"""BA-RegNetY: timm's RegNet with a bridge gate replacing the SE of every ``act(conv3(SE(conv2(conv1(x)))) + shortcut)``
block. ``ba_placement`` (docs/placement.md): ``"output"`` (default, the BAv2 ResNet placement: taps = the three conv
outputs, ``conv3``'s is rescaled before the residual add) or ``"se"`` (taps = ``conv1`` and ``conv2`` outputs,
``conv2``'s is rescaled where SE was). ``small_input=True`` makes the stem conv stride 1 for 28-64 px images.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models.regnet import Bottleneck

from .bridging import create_bridged, placement_gate

__all__ = ["BARegNetBottleneck", "create_regnet_variant"]


class BARegNetBottleneck(Bottleneck):
    """timm's RegNet ``Bottleneck`` with a bridge gate instead of SE."""

    warm_start_replaces = "se"  # the plain twin's SE weights have no place here (models.warmstart)

    def init_bridge(self, ba_args: dict[str, Any], placement: str = "output") -> None:
        self.se = nn.Identity()
        self.placement = placement
        self.ba = placement_gate(placement, self.conv2.conv.out_channels, self.conv3.conv.out_channels, ba_args)

    def warm_start_scale(self) -> str:
        """What the gate rescales: ``conv3``'s norm (output placement) or the conv reading the gated map."""
        return "conv3.bn" if self.placement == "output" else "conv3.conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        y1 = self.conv1(x)
        y2 = self.conv2(y1)
        if self.placement == "se":
            y2 = y2 * self.ba([y1.mean((2, 3)), y2.mean((2, 3))])
            y3 = self.conv3(y2)
        else:
            y3 = self.conv3(y2)
            y3 = y3 * self.ba([y1.mean((2, 3)), y2.mean((2, 3)), y3.mean((2, 3))])
        if self.downsample is not None:
            y3 = self.drop_path(y3) + self.downsample(shortcut)
        return self.act3(y3)


def create_regnet_variant(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's RegNet twin with bridged blocks (``twin``, ``version``, ``ba_placement``, gate settings)."""
    # timm zero-inits the last BatchNorm of each block, which would hand the gate an all-zero tap and no
    # gradient at the start; the BA references never zero-init (docs/spec.md, section 2).
    kwargs.setdefault("zero_init_last", False)
    return create_bridged(variant, pretrained, BARegNetBottleneck, stem="stem.conv", **kwargs)
