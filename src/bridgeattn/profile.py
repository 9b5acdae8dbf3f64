"""Model cost: parameters and multiply-accumulates (MACs, not FLOPs: one MAC is one multiply plus one add)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """MACs of one eval-mode forward pass on ``(batch_size, *input_size)``, via ``torch.utils.flop_counter``.

    Runs on the model's device; a model on the ``meta`` device is counted without any arithmetic.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((batch_size, *input_size), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def model_cost(name: str, input_size: tuple[int, ...] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Params and MACs of a registered model, built on the ``meta`` device (no memory, no arithmetic)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, **kwargs)
    size = tuple(input_size or model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return {"model": name, "params": count_params(model), "macs": count_macs(model, size), "input_size": list(size)}
