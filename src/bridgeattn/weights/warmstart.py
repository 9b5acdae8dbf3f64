"""Warm start from a plain twin's weights: ``from_plain(name, location)``; the per-block rule is
:mod:`bridgeattn.models.warmstart`."""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
from timm.models import get_pretrained_cfg

from ..errors import UserError
from ..models import create_model
from ..models.warmstart import warm_state_dict
from .loading import load_state
from .safe_load import state_dict_from


def _tensors(plain: Any) -> Iterator[torch.Tensor]:
    return (v for v in plain.values() if isinstance(v, torch.Tensor))


def load_plain(plain: Any, unsafe: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a state dict, a model, or any location ``load_model`` takes (a run folder, a
    checkpoint, a hub folder, a ``.safetensors`` file, a timm name such as ``resnet50.a1_in1k``)."""
    if isinstance(plain, nn.Module):
        return dict(plain.state_dict())
    if isinstance(plain, Mapping):
        return state_dict_from(plain, source="the plain weights")
    if isinstance(plain, (str, os.PathLike)):
        return load_state(plain, unsafe=unsafe)
    raise UserError(f"plain weights must be a state dict, a model, a file or a timm name; got {type(plain).__name__}")


def from_plain(name: str, plain: Any, unsafe: bool = False, **kwargs: Any) -> nn.Module:
    """The model ``name`` computing exactly what the plain twin computes (eval and training mode).

    Args:
        name: a registered model, e.g. ``"bav2_resnet50"``, ``"bav2_resnet20"``, ``"se_resnet20"``.
        plain: the plain twin's weights: a state dict, a model, or a location as ``load_model`` takes it: a run
            folder, a checkpoint file (training-checkpoint wrappers are removed), a hub folder, a
            ``.safetensors`` file, or a timm name such as ``"resnet50.a1_in1k"``.
        unsafe: allow pickles that run code (trusted files only).
        **kwargs: passed to ``create_model``; ``num_classes`` and ``in_chans`` default to the plain weights'.

    A checkpoint of the model itself (it holds gate keys) is loaded as it is.
    """
    weights = load_plain(plain, unsafe=unsafe)
    try:
        cfg = get_pretrained_cfg(name.split(".", 1)[0])
    except Exception:  # an unknown name is reported by create_model
        cfg = None
    if cfg is not None:
        fc = cfg.classifier if isinstance(cfg.classifier, str) else None
        conv = cfg.first_conv if isinstance(cfg.first_conv, str) else None
        if fc and f"{fc}.weight" in weights:
            kwargs.setdefault("num_classes", weights[f"{fc}.weight"].shape[0])
        if conv and f"{conv}.weight" in weights and weights[f"{conv}.weight"].dim() == 4:
            kwargs.setdefault("in_chans", weights[f"{conv}.weight"].shape[1])
    model = create_model(name, **kwargs)
    if {v.dtype for v in _tensors(weights) if v.is_floating_point()} == {torch.float64}:
        model.to(dtype=torch.float64)  # float64 weights give a float64 model: nothing is rounded
    model.load_state_dict(warm_state_dict(model, weights, name))
    return model
