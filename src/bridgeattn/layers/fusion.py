"""Inference-time fusion of the bridge gates.

``fuse(model)`` replaces every :class:`~bridgeattn.layers.bridge.BridgeAttention` of an eval-mode model by its
:class:`~bridgeattn.layers.bridge.FusedBridgeAttention`: the per-tap integration layers, the BAv2 selection
weights (or the BAv1 per-tap BatchNorms) and the gate's eval-mode BatchNorm1d fold into one
``Linear(sum C_i -> h)`` over the concatenated taps. Outputs equal the unfused model's (float rounding). The walk
is timm's ``reparameterize_model``, which calls each gate's ``fuse()``: it fuses our gates in any timm model.

State dicts: the fused gate has other keys (``ba.integration.weight`` of shape ``(h, sum C_i)``,
``ba.integration.bias``, ``ba.generation.weight``). So

- load trained weights (``model.load_state_dict``, ``from_pretrained``, converted reference checkpoints)
  into the *unfused* model first, then call ``fuse``;
- a fused model's state dict loads only into a fused model of the same architecture
  (``fuse(create_model(name).eval()).load_state_dict(sd)``); it cannot be turned back into a trainable one.
"""
from __future__ import annotations

import torch.nn as nn
from timm.utils import reparameterize_model

from ..errors import UserError
from .bridge import BridgeAttention

__all__ = ["fuse"]


def fuse(model: nn.Module) -> nn.Module:
    """Fold every bridge gate of ``model`` (in eval mode) into one Linear; in place, returns ``model``.

    Raises ``UserError`` if the model is in training mode (the fold uses BatchNorm running statistics)
    or if a gate uses the input-adaptive softmax selection, which has no folded form. Nothing is
    changed when an error is raised. Models without bridge gates are returned unchanged.
    """
    gates = [(name, m) for name, m in model.named_modules() if isinstance(m, BridgeAttention)]
    if model.training or any(m.training for _, m in gates):
        raise UserError(
            "fuse() folds the gates' BatchNorm running statistics and is for inference: call model.eval() first"
        )
    for name, gate in gates:  # every gate is tried before the walk, so that an error leaves the model as it was
        try:
            gate.fuse()
        except ValueError as exc:
            raise UserError(f"cannot fuse {name!r}: {exc}; use the unfused model") from None
    return reparameterize_model(model, inplace=True)
