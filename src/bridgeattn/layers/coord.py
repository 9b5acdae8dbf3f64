"""Coordinate Attention ("Coordinate Attention for Efficient Mobile Network Design", Hou et al., CVPR 2021,
arXiv 2103.02907).

timm's ``CoordAttn`` computes exactly the paper's formula; :class:`CoordAttention` sets the paper's defaults:
reduction 32 with at least 8 hidden channels, biases in the 1x1 convs, and h-swish.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import get_attn

__all__ = ["CoordAttention"]

CoordAttn = get_attn("coord")  # timm.layers exports the class through its attention factory only


class CoordAttention(CoordAttn):
    """Coordinate Attention with the paper's defaults (``h = max(8, C // 32)`` for power-of-two widths)::

        z_h = mean_W(x)  (B, C, H, 1),   z_w = mean_H(x)  (B, C, 1, W)
        f = act(BN(F1 [z_h ; z_w^T]))    F1: 1x1 conv C -> h on the concatenated strips
        g_h = sigmoid(F_h f_h),  g_w = sigmoid(F_w f_w^T),  y = x * g_h * g_w    (B, C, H, W)
    """

    def __init__(
        self, channels: int, rd_ratio: float = 1 / 32, rd_channels: int | None = None, rd_divisor: int = 8,
        bias: bool = True, act_layer: type[nn.Module] = nn.Hardswish,
        norm_layer: type[nn.Module] | None = nn.BatchNorm2d, gate_layer: type[nn.Module] | str = "sigmoid",
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor, se_factor=1.0, bias=bias,
            act_layer=act_layer, norm_layer=norm_layer, gate_layer=gate_layer, device=device, dtype=dtype,
        )
