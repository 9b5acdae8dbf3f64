"""BA-ConvNeXt: timm's ConvNeXt with a bridge gate in every ``x + gamma * fc2(act(fc1(LN(dwconv7x7(x)))))`` block.

Taps (``ba_taps`` selects a subset, e.g. ``("dw", "out")`` drops the 4C-wide one; docs/placement.md):
``"dw"`` the normalised depthwise output ``(B, H, W, C)``, ``"hidden"`` the MLP hidden activation
``(B, H, W, 4C)``, ``"out"`` the branch output ``gamma * fc2(.)`` ``(B, H, W, C)``, which the gate rescales.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models.convnext import ConvNeXtBlock, checkpoint_filter_fn

from .bridging import create_bridged, tap_gate

__all__ = ["BAConvNeXtBlock", "CONVNEXT_TAPS", "create_convnext_variant"]

CONVNEXT_TAPS = ("dw", "hidden", "out")


class BAConvNeXtBlock(ConvNeXtBlock):
    """timm's ``ConvNeXtBlock`` (channels-last MLP) whose branch output is rescaled by a bridge gate."""

    def init_bridge(self, ba_args: dict[str, Any], taps: Sequence[str] = CONVNEXT_TAPS) -> None:
        if self.use_conv_mlp:
            raise ValueError("bridge gates support ConvNeXt blocks with the channels-last MLP (conv_mlp=False)")
        dim, hidden = self.mlp.fc1.in_features, self.mlp.fc1.out_features
        self.taps, self.ba = tap_gate(taps, {"dw": dim, "hidden": hidden, "out": dim}, dim, ba_args, "ConvNeXt")

    def warm_start_scale(self) -> str:
        """What the gate rescales: the layer scale ``gamma``, else the MLP's last Linear (models.warmstart)."""
        return "gamma" if self.gamma is not None else "mlp.fc2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        dw = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))  # (B, H, W, C)
        mlp = self.mlp
        hidden = mlp.norm(mlp.drop1(mlp.act(mlp.fc1(dw))))
        out = mlp.drop2(mlp.fc2(hidden))
        if self.gamma is not None:
            out = out * self.gamma
        named = {"dw": dw, "hidden": hidden, "out": out}
        gate = self.ba([named[t].mean((1, 2)) for t in self.taps])  # (B, C, 1, 1)
        out = (out * gate.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.drop_path(out) + self.shortcut(shortcut)


def create_convnext_variant(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's ConvNeXt twin with bridged blocks (``twin``, ``version``, ``ba_taps``, gate settings)."""
    return create_bridged(variant, pretrained, BAConvNeXtBlock, twin_filter=checkpoint_filter_fn, **kwargs)
