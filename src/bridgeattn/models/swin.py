"""BA-Swin: timm's Swin Transformer with a bridge gate in every ``x + attn(LN(x)); x + fc2(act(fc1(LN(x))))`` block.

Taps, squeezed by a mean over tokens (``ba_taps`` selects a subset; docs/placement.md): ``"attn"`` the
(shifted-)window attention output ``(B, H, W, C)``, ``"hidden"`` the MLP hidden activation ``(B, N, 4C)``,
``"out"`` the MLP output ``(B, N, C)``, which the gate rescales before the block's last residual add.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from timm.models.swin_transformer import SwinTransformerBlock, checkpoint_filter_fn

from .bridging import create_bridged, tap_gate

__all__ = ["BASwinTransformerBlock", "SWIN_TAPS", "create_swin_variant"]

SWIN_TAPS = ("attn", "hidden", "out")


class BASwinTransformerBlock(SwinTransformerBlock):
    """timm's ``SwinTransformerBlock`` whose MLP output is rescaled by a bridge gate (token-mean taps)."""

    def init_bridge(self, ba_args: dict[str, Any], taps: Sequence[str] = SWIN_TAPS) -> None:
        dim, hidden = self.mlp.fc1.in_features, self.mlp.fc1.out_features
        self.taps, self.ba = tap_gate(taps, {"attn": dim, "hidden": hidden, "out": dim}, dim, ba_args, "Swin")

    def warm_start_scale(self) -> str:
        """What the gate rescales: the MLP's last Linear (models.warmstart)."""
        return "mlp.fc2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        B, H, W, C = x.shape
        attn = self._attn(self.norm1(x))
        x = (x + self.drop_path1(attn)).reshape(B, -1, C)
        mlp = self.mlp
        hidden = mlp.norm(mlp.drop1(mlp.act(mlp.fc1(self.norm2(x)))))  # (B, N, 4C)
        out = mlp.drop2(mlp.fc2(hidden))  # (B, N, C)
        named = {"attn": attn.mean((1, 2)), "hidden": hidden.mean(1), "out": out.mean(1)}
        gate = self.ba([named[t] for t in self.taps]).flatten(1)  # (B, C)
        x = x + self.drop_path2(out * gate[:, None, :])
        return x.reshape(B, H, W, C)


def create_swin_variant(variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's Swin twin with bridged blocks (``twin``, ``version``, ``ba_taps``, gate settings)."""
    return create_bridged(variant, pretrained, BASwinTransformerBlock, twin_filter=checkpoint_filter_fn, **kwargs)
