"""SRM style-based recalibration ("SRM: A Style-based Recalibration Module for Convolutional Neural Networks",
Lee et al., ICCV 2019, arXiv 1903.10829): each channel's mean and standard deviation, weighed by a channel-wise
fully connected layer (2 weights per channel), then BatchNorm and a sigmoid::

    mu_c = mean_{h,w} x_c,   sigma_c = sqrt(mean_{h,w} (x_c - mu_c)^2 + eps)
    z_c = a_c mu_c + b_c sigma_c,   g = sigmoid(BN(z)),   y = x * g

The paper's population standard deviation (``eps`` inside the root) stays finite on a 1x1 map. The channel weights
start at zero, as in the paper's code, so every gate starts at ``sigmoid(0) = 0.5``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import create_act_layer

from .bridge import GateBatchNorm1d

__all__ = ["SrmModule"]


class SrmModule(nn.Module):
    """SRM ``(B, C, H, W) -> (B, C, H, W)``. No hidden layer, so timm's ``rd_*`` and ``act_layer`` do not apply; the
    BatchNorm is a :class:`~bridgeattn.layers.bridge.GateBatchNorm1d` (a training batch of one sample works)."""

    def __init__(
        self, channels: int, eps: float = 1e-5, gate_layer: type[nn.Module] | str = "sigmoid",
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        # cfc[:, 0] weighs the mean, cfc[:, 1] the standard deviation.
        self.cfc = nn.Parameter(torch.zeros(channels, 2, device=device, dtype=dtype))
        self.bn = GateBatchNorm1d(channels, device=device, dtype=dtype)
        self.gate = create_act_layer(gate_layer)

    def no_weight_decay(self) -> set[str]:
        """The style weights, which the official training script keeps out of weight decay."""
        return {"cfc"}

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """Style pooling ``(B, C, H, W) -> (B, C, 2)``: per-channel mean and standard deviation."""
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
        return torch.stack([mean, (var + self.eps).sqrt()], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.style(x) * self.cfc).sum(-1)
        g = self.gate(self.bn(z))
        return x * g[:, :, None, None]
