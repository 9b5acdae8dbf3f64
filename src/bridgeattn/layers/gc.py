"""GCNet's global context block ("GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", Cao et al.,
ICCV Workshops 2019, arXiv 1904.11492).

timm's ``GlobalContext`` computes the block but defaults to multiplicative fusion with r = 1/8;
:class:`GlobalContextBlock` sets GCNet's: additive fusion ``y = x + transform(context)`` with r = 1/16.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import GlobalContext

__all__ = ["GlobalContextBlock"]


class GlobalContextBlock(GlobalContext):
    """GCNet's block: attention pooling, ``h = C * rd_ratio`` bottleneck, additive fusion; ``(B, C, H, W)``."""

    def __init__(
        self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int = 1,
        act_layer: type[nn.Module] = nn.ReLU, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            channels, use_attn=True, fuse_add=True, fuse_scale=False, rd_ratio=rd_ratio, rd_channels=rd_channels,
            rd_divisor=rd_divisor, act_layer=act_layer, device=device, dtype=dtype,
        )

    def reset_parameters(self) -> None:
        """GCNet's init: the attention conv kaiming-normal, the transform's last conv (weight and bias) zero, so the
        block starts as the identity. Network constructors that re-initialise every conv call this again."""
        super().reset_parameters()
        nn.init.zeros_(self.mlp_add.fc2.bias)
