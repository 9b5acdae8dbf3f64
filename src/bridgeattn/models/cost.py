"""What a model costs, counted on the ``meta`` device (shapes only: no memory, no arithmetic, no download):
parameters and multiply-accumulates (MACs, not FLOPs: one MAC is one multiply plus one add)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.data import resolve_model_data_config
from torch.utils.flop_counter import FlopCounterMode

from ..config import REMOTE_KWARGS


def meta_model(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` on the meta device, without the weight-fetching arguments."""
    with torch.device("meta"):
        return timm.create_model(name, **{k: v for k, v in kwargs.items() if k not in REMOTE_KWARGS})


def default_input_size(model: torch.nn.Module, img_size: int | None = None,
                       in_chans: int | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of one input image: timm's data config of ``model`` (its ``pretrained_cfg``, else 224 px),
    the side ``img_size`` when given, and ``in_chans`` channels (default: the model's own ``in_chans``)."""
    args = {"img_size": int(img_size)} if img_size else None
    chans, height, width = resolve_model_data_config(model, args=args)["input_size"]
    return int(in_chans or getattr(model, "in_chans", None) or chans), int(height), int(width)


@contextlib.contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """``model`` in train (``True``) or eval mode inside the ``with`` block, back in its own mode after it."""
    was_training = model.training
    try:
        yield model.train(training)
    finally:
        model.train(was_training)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> FlopCounterMode:
    """The FLOP counter after one eval-mode forward of zeros ``(batch_size, *input_size)`` on the model's device."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros((batch_size, *input_size), device=param.device if param is not None else "cpu", dtype=dtype)
    with training_mode(model, False), FlopCounterMode(display=False) as counter:
        model(x)
    return counter


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """MACs of one eval-mode forward pass on ``(batch_size, *input_size)``."""
    return int(count_flops(model, input_size, batch_size).get_total_flops()) // 2


def model_cost(name: str, input_size: tuple[int, ...] | None = None, **kwargs: Any) -> dict[str, Any]:
    """``{"model", "params", "macs", "input_size"}`` of ``name`` built with ``kwargs`` (default size: its own)."""
    model = meta_model(name, **kwargs)
    size = tuple(input_size or default_input_size(model))
    return {"model": name, "params": count_params(model), "macs": count_macs(model, size), "input_size": list(size)}
