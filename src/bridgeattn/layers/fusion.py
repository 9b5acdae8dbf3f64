"""Inference-time fusion of the bridge gates through timm's ``reparameterize_model`` (docs/speed.md)."""
from __future__ import annotations

import torch.nn as nn
from timm.utils import reparameterize_model

from ..errors import UserError
from .bridge import BridgeAttention

__all__ = ["fuse"]


def fuse(model: nn.Module) -> nn.Module:
    """Fold every bridge gate of the eval-mode ``model`` into a :class:`~bridgeattn.layers.bridge.FusedBridgeAttention`
    (one Linear), in place; returns ``model``. Load weights first: the fused gates have other state-dict keys.
    ``UserError`` in training mode or for a softmax selection, with the model unchanged."""
    gates = [(name, m) for name, m in model.named_modules() if isinstance(m, BridgeAttention)]
    if model.training or any(m.training for _, m in gates):
        raise UserError("fuse() folds the gates' BatchNorm running statistics and is for inference: "
                        "call model.eval() first")
    for name, gate in gates:  # every gate is tried before the walk, so that an error leaves the model as it was
        try:
            gate.fuse()
        except ValueError as exc:
            raise UserError(f"cannot fuse {name!r}: {exc}; use the unfused model") from None
    return reparameterize_model(model, inplace=True)
