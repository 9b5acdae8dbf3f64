"""Bridge Attention: a channel gate computed from the squeezed outputs of every transform in a block.

BAv1: "BA-Net: Bridge Attention for Deep Convolutional Neural Networks" (Zhao et al., ECCV 2022,
arXiv 2112.04150). BAv2: "BA-Net: Bridge Attention in Deep Neural Networks" (Zhang et al.,
arXiv 2410.07860), which adds the adaptive selection operator.

For taps ``s_i`` (pooled outputs of the block's convs, ``(B, C_i)``) and ``h = channels * rd_ratio``::

    BAv2:  z_i = W_i s_i;         u = sum_i a_i z_i + b;   w = gate(W_g act(BN(u)))
    BAv1:  z_i = BN_i(W_i s_i);   u = sum_i z_i;           w = gate(W_g act(u))

The returned gate ``w`` has shape ``(B, C, 1, 1)`` and rescales the block's last conv output.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_act_layer, make_divisible, register_notrace_module

from .ops import is_fx_proxy

__all__ = ["BridgeAttention", "FusedBridgeAttention", "GateBatchNorm1d", "LinearSelection", "SoftmaxSelection",
           "bridge_hidden_channels", "squeeze_taps"]

Version = Literal["v1", "v2"]
SelectionName = Literal["linear", "softmax"]


def bridge_hidden_channels(channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                           rd_divisor: int = 1, rd_min_channels: int = 1) -> int:
    """Width ``h`` of the gate's hidden layer: the papers' ``channels // 16`` with the defaults."""
    if rd_channels is not None:
        return int(rd_channels)
    if rd_divisor > 1:
        return make_divisible(channels * rd_ratio, rd_divisor, min_value=rd_min_channels, round_limit=0.0)
    return max(rd_min_channels, int(channels * rd_ratio))


def squeeze_taps(taps: list[torch.Tensor]) -> list[torch.Tensor]:
    """Global-average-pool each tap to ``(B, C_i)``; taps already ``(B, C_i)`` pass through."""
    squeezed: list[torch.Tensor] = []
    for tap in taps:
        if tap.dim() == 2:
            squeezed.append(tap)
        elif tap.dim() == 4:
            squeezed.append(tap.mean((2, 3)) if tap.shape[-1] * tap.shape[-2] > 1 else tap.flatten(1))
        elif tap.dim() == 3:  # token layout (B, N, C): mean over tokens
            squeezed.append(tap.mean(1))
        else:
            raise ValueError("a bridge tap must be (B, C), (B, N, C) or (B, C, H, W); got " + str(tap.shape))
    return squeezed


@register_notrace_module
class GateBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that normalises a training batch of one sample (no batch statistics) with its running
    statistics, leaving them unchanged. An fx leaf for timm; other symbolic traces (torch.ao's prepare_fx,
    torchvision's feature extractor) have no batch size to branch on and record the plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        traced = not torch.jit.is_scripting() and is_fx_proxy(x)
        if self.training and self.track_running_stats and not traced and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # nn.BatchNorm1d.forward, written out: TorchScript cannot compile ``super().forward``.
        if not traced:
            self._check_input_dim(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, use_batch_stats, momentum, self.eps)


class LinearSelection(nn.Module):
    """The BAv2 selection operator ``u = sum_i a_i z_i + b``, shared by all channels; stored as the reference
    checkpoints' ``Linear(n, 1)`` over the tap axis (weight ``(1, n)``, bias ``(1,)``)."""

    def __init__(self, num_taps: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, num_taps))
        self.bias = nn.Parameter(torch.empty(1))
        # nn.Linear's default initialisation, so that parameter draws match the reference layer.
        bound = 1.0 / num_taps**0.5
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, h, n)`` stacked integrated taps -> ``(B, h)``."""
        return F.linear(z, self.weight, self.bias).squeeze(-1)


class SoftmaxSelection(nn.Module):
    """Input-adaptive selection for ablations (not in the papers): ``u = sum_i p_i z_i`` with per-sample weights
    ``p = softmax_i(v . z_i)``."""

    def __init__(self, num_taps: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Linear(hidden, 1)

    def probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """``z``: ``(B, h, n)`` -> per-sample tap weights ``(B, n)`` summing to one."""
        return self.score(z.transpose(1, 2)).squeeze(-1).softmax(dim=-1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bhn,bn->bh", z, self.probabilities(z))


class BridgeAttention(nn.Module):
    """Bridge Attention gate (BAv1 or BAv2) over any number of taps.

    Args:
        in_channels: channels ``C_i`` of each tap, in block order (the last is the gated output).
        channels: channels ``C`` of the gated feature map.
        rd_ratio: hidden width as a fraction of ``channels`` (papers: 1/16; 1/6 for MobileNetV3 and EfficientNet).
        rd_channels: explicit hidden width, overrides ``rd_ratio``.
        rd_divisor: round the hidden width to a multiple of this (1: the papers' floor division).
        rd_min_channels: lower bound of the hidden width.
        version: ``"v2"`` (adaptive selection, the default) or ``"v1"`` (per-tap BatchNorm, plain sum).
        selection: ``"linear"`` (the paper's operator) or ``"softmax"`` (input-adaptive; v2 only).
        act_layer: activation between the hidden layer and the generation layer.
        gate_layer: ``"sigmoid"``, ``"hard_sigmoid"`` or any timm activation name/class.

    Shapes: ``forward(taps)`` with taps ``(B, C_i)``, ``(B, N, C_i)`` or ``(B, C_i, H, W)`` (averaged) returns the
    gate ``(B, C, 1, 1)``.
    """

    def __init__(
        self, in_channels: Sequence[int], channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
        rd_divisor: int = 1, rd_min_channels: int = 1, version: Version = "v2", selection: SelectionName = "linear",
        act_layer: type[nn.Module] | str = nn.ReLU, gate_layer: type[nn.Module] | str = "sigmoid",
    ) -> None:
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        if not self.in_channels:
            raise ValueError("BridgeAttention needs at least one tap")
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        if selection not in ("linear", "softmax"):
            raise ValueError(f"selection must be 'linear' or 'softmax', got {selection!r}")
        if version == "v1" and selection != "linear":
            raise ValueError("BAv1 sums its taps; a selection operator exists only for version='v2'")
        self.channels = int(channels)
        self.version = version
        hidden = bridge_hidden_channels(channels, rd_ratio, rd_channels, rd_divisor, rd_min_channels)
        self.hidden_channels = hidden
        self.integration = nn.ModuleList([nn.Linear(c, hidden, bias=False) for c in self.in_channels])
        self.integration_norm = self.selection = self.norm = None
        if version == "v1":
            self.integration_norm = nn.ModuleList([GateBatchNorm1d(hidden) for _ in self.in_channels])
        else:
            self.selection = (LinearSelection(self.num_taps) if selection == "linear"
                              else SoftmaxSelection(self.num_taps, hidden))
            self.norm = GateBatchNorm1d(hidden)
        self.act = create_act_layer(act_layer, inplace=True)
        self.generation = nn.Linear(hidden, channels, bias=False)
        self.gate = create_act_layer(gate_layer)

    @property
    def num_taps(self) -> int:
        return len(self.in_channels)

    def _check_taps(self, taps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Squeeze the taps and check their number and widths (one clear error instead of a shape error)."""
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return squeeze_taps(taps)  # a compiled graph keeps no Python-side shape checks
        if is_fx_proxy(taps[0]):
            return taps  # fx: shapes are symbolic; the blocks pass pooled (B, C_i) taps
        if len(taps) != self.num_taps:
            raise ValueError(f"BridgeAttention expects {self.num_taps} taps, got {len(taps)}")
        squeezed = squeeze_taps(taps)
        for i, (s, c) in enumerate(zip(squeezed, self.in_channels)):
            if s.shape[1] != c:
                raise ValueError(f"tap {i} has {s.shape[1]} channels, expected {c}")
        return squeezed

    def hidden(self, taps: list[torch.Tensor]) -> torch.Tensor:
        """The bridged hidden vector after normalisation and activation, ``(B, h)``."""
        squeezed = self._check_taps(taps)
        # One Linear per tap, as stored: quantization and fx graphs see each layer's weight unchanged.
        zs: list[torch.Tensor] = []
        for i, fc in enumerate(self.integration):
            zs.append(fc(squeezed[i]))
        if self.integration_norm is not None:  # BAv1: u = sum_i BN_i(W_i s_i)
            for i, norm in enumerate(self.integration_norm):
                zs[i] = norm(zs[i])
            u = zs[0]
            for z in zs[1:]:
                u = u + z
            return self.act(u)
        u = self.selection(torch.stack(zs, dim=-1))
        return self.act(self.norm(u))

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        w = self.gate(self.generation(self.hidden(taps)))
        return w[:, :, None, None]

    def selection_weights(self) -> torch.Tensor | None:
        """The learned per-tap weights ``a`` of the linear selection operator (``None`` otherwise)."""
        if isinstance(self.selection, LinearSelection):
            return self.selection.weight.detach().reshape(-1)
        return None

    @torch.no_grad()
    def fuse(self) -> FusedBridgeAttention:
        """The eval-mode gate with integration, selection and BatchNorms folded into one Linear (called by timm's
        ``reparameterize_model``); ``ValueError`` in training mode or for the softmax selection."""
        if self.training:
            raise ValueError("the fold uses BatchNorm running statistics: call model.eval() first")
        if isinstance(self.selection, SoftmaxSelection):
            raise ValueError("the softmax selection depends on the input and cannot be folded")
        if self.version == "v2":
            a = self.selection.weight[0]
            weight = torch.cat([a[i] * fc.weight for i, fc in enumerate(self.integration)], dim=1)
            bias = self.selection.bias.expand(self.hidden_channels)
            scale, shift = _bn_affine(self.norm)
            weight, bias = weight * scale[:, None], bias * scale + shift
        else:
            parts, bias = [], 0.0
            for fc, norm in zip(self.integration, self.integration_norm):
                scale, shift = _bn_affine(norm)
                parts.append(fc.weight * scale[:, None])
                bias = bias + shift
            weight = torch.cat(parts, dim=1)
        fused = FusedBridgeAttention(self.in_channels, self.channels, self.hidden_channels, self.act, self.gate)
        fused.to(device=weight.device, dtype=weight.dtype)
        fused.integration.weight.copy_(weight)
        fused.integration.bias.copy_(bias)
        fused.generation.weight.copy_(self.generation.weight)
        return fused.eval()

    def fused(self) -> FusedBridgeAttention:
        """The old name of :meth:`fuse` (kept for one release)."""
        warnings.warn("BridgeAttention.fused() is now fuse()", DeprecationWarning, stacklevel=2)
        return self.fuse()

    def extra_repr(self) -> str:
        sel = "none" if self.selection is None else type(self.selection).__name__
        return f"version={self.version}, taps={list(self.in_channels)}, hidden={self.hidden_channels}, selection={sel}"


class FusedBridgeAttention(nn.Module):
    """Inference form of :class:`BridgeAttention`: ``w = gate(W_g act(W cat(s) + b))``."""

    def __init__(self, in_channels: Sequence[int], channels: int, hidden: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.channels = int(channels)
        self.hidden_channels = int(hidden)
        self.integration = nn.Linear(sum(self.in_channels), hidden)
        self.act = act
        self.generation = nn.Linear(hidden, channels, bias=False)
        self.gate = gate

    @property
    def num_taps(self) -> int:
        return len(self.in_channels)

    def forward(self, taps: Sequence[torch.Tensor]) -> torch.Tensor:
        s = torch.cat(squeeze_taps(taps), dim=1)
        return self.gate(self.generation(self.act(self.integration(s))))[:, :, None, None]


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``y = x * scale + shift``."""
    scale = torch.rsqrt(bn.running_var + bn.eps) * bn.weight
    return scale, bn.bias - bn.running_mean * scale
