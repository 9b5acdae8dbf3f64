"""FcaNet multi-spectral channel attention ("FcaNet: Frequency Channel Attention Networks", Qin et al., ICCV 2021,
arXiv 2012.11879): the ``C`` channels form ``n`` groups, group ``g`` squeezed by its own DCT basis function::

    Freq_c = sum_{h,w} x_c[h, w] * B_{u_g}(h; H) * B_{v_g}(w; W),   w = sigmoid(W_2 relu(W_1 Freq))
    B_u(t; T) = cos(pi * u * (t + 1/2) / T) / sqrt(T) * (sqrt(2) if u > 0 else 1)     (orthonormal DCT-II)

The paper's frequencies are given on a 7x7 grid and scaled to ``(u * H // 7, v * W // 7)``: its 56/28/14/7 filters
exactly, and any map size (filters built lazily per size and cached).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_act_layer, make_divisible, register_notrace_module

__all__ = ["FCA_TOP_FREQUENCIES", "FcaModule", "dct_filters"]

# The paper's frequency ranking on a 7x7 grid (its Figure 4 / ablation), best first: (u on H, v on W).
FCA_TOP_FREQUENCIES: tuple[tuple[int, int], ...] = tuple(zip(
    (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1),
    (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3),
))
_GRID = 7


def _frequencies(freq_select: str) -> list[tuple[int, int]]:
    n = int(freq_select[3:]) if freq_select.startswith("top") and freq_select[3:].isdigit() else 0
    if not 1 <= n <= len(FCA_TOP_FREQUENCIES):
        raise ValueError(f"freq_select must be 'top1' .. 'top32', got {freq_select!r}")
    return list(FCA_TOP_FREQUENCIES[:n])


def _dct_basis(freqs: torch.Tensor, size: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vectors: ``freqs`` ``(n,)`` -> ``(n, size)``."""
    t = torch.arange(size, dtype=torch.float64, device=freqs.device)
    basis = torch.cos(math.pi * freqs[:, None] * (t[None, :] + 0.5) / size) / math.sqrt(size)
    return torch.where(freqs[:, None] > 0, basis * math.sqrt(2.0), basis)


def dct_filters(
    channels: int, height: int, width: int, frequencies: list[tuple[int, int]], grid: int = _GRID
) -> torch.Tensor:
    """The per-channel DCT filters ``(C, H, W)``: channel ``c`` uses frequency ``c * n // C``, scaled from ``grid``."""
    n = len(frequencies)
    u = torch.tensor([f[0] * height // grid for f in frequencies], dtype=torch.float64)
    v = torch.tensor([f[1] * width // grid for f in frequencies], dtype=torch.float64)
    group = torch.arange(channels) * n // channels
    per_group = _dct_basis(u, height)[:, :, None] * _dct_basis(v, width)[:, None, :]
    return per_group[group].float()


@register_notrace_module  # filters are built per input size: an fx leaf (its size is not symbolic there)
class FcaModule(nn.Module):
    """FcaNet multi-spectral channel attention ``(B, C, H, W) -> (B, C, H, W)``; not scriptable (filters are cached
    per map size in a Python dict).

    ``rd_*``: hidden width, by default the official code's ``C // 16`` (``rd_divisor=8`` rounds as timm's SE);
    ``freq_select``: ``"topN"``, the paper's ``N`` best frequencies; ``dct_size``: ``None`` to build filters for each
    input size, or a size to average-pool inputs to first (the paper's detection models); ``bias``: biases in the
    two excitation layers (the paper has none).
    """

    def __init__(
        self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None, rd_divisor: int = 1,
        freq_select: str = "top16", dct_size: int | tuple[int, int] | None = None, bias: bool = False,
        act_layer: type[nn.Module] | str = nn.ReLU, gate_layer: type[nn.Module] | str = "sigmoid",
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = int(channels)
        self.frequencies = _frequencies(freq_select)
        self.dct_size = (dct_size, dct_size) if isinstance(dct_size, int) else dct_size
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(channels, rd_channels, bias=bias, **dd)
        self.act = create_act_layer(act_layer, inplace=True)
        self.fc2 = nn.Linear(rd_channels, channels, bias=bias, **dd)
        self.gate = create_act_layer(gate_layer)
        # Filters depend only on (H, W): built on first use, never saved (they are not learned).
        self._filters: dict[tuple, torch.Tensor] = {}

    def filters(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(C, H, W)`` DCT filters for an ``H x W`` map (cached)."""
        key = (height, width, device, dtype)
        if key not in self._filters:
            filt = dct_filters(self.channels, height, width, self.frequencies)
            self._filters[key] = filt.to(device=device, dtype=dtype)
        return self._filters[key]

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-spectral squeeze ``(B, C, H, W) -> (B, C)``."""
        if self.dct_size is not None and tuple(x.shape[-2:]) != tuple(self.dct_size):
            x = F.adaptive_avg_pool2d(x, self.dct_size)
        filt = self.filters(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return torch.einsum("bchw,chw->bc", x, filt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.gate(self.fc2(self.act(self.fc1(self.squeeze(x)))))
        return x * w[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, frequencies={len(self.frequencies)}, dct_size={self.dct_size}"
