"""Frozen BatchNorm for fine-tuning with tiny batches (detection, segmentation): fixed affine maps from the running
statistics, so any batch size (one included) gives the same per-sample output."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import freeze_batch_norm_2d

__all__ = ["FrozenBatchNorm1d", "freeze_bn"]


class FrozenBatchNorm1d(nn.Module):
    """BatchNorm1d with fixed statistics and affine parameters (all buffers). Input ``(B, C)`` or ``(B, C, L)``."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, bn: nn.BatchNorm1d) -> FrozenBatchNorm1d:
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.running_mean is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        reference = bn.running_mean if bn.running_mean is not None else bn.weight
        return frozen if reference is None else frozen.to(device=reference.device, dtype=reference.dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Checkpoints of the unfrozen model carry a counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_bn(model: nn.Module) -> nn.Module:
    """Turn every BatchNorm2d of ``model`` into timm's ``FrozenBatchNorm2d`` and every BatchNorm1d (the gates') into
    :class:`FrozenBatchNorm1d`, in place where possible; returns the model. Their parameters become buffers, which
    optimisers skip; an eval-mode model's outputs are unchanged."""
    model = freeze_batch_norm_2d(model)
    if isinstance(model, nn.BatchNorm1d):
        return FrozenBatchNorm1d.from_batch_norm(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.BatchNorm1d):
            model.set_submodule(name, FrozenBatchNorm1d.from_batch_norm(module))
    return model
