"""Warm start from a plain twin's weights: ``from_plain(name, location)``; the per-block rule is
:mod:`bridgeattn.models.warmstart`."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..errors import UserError
from ..models import create_model
from ..models.warmstart import warm_state_dict
from .loading import load_state, match_dtype, shapes_from_weights
from .safe_load import state_dict_from


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
    model = create_model(name, **{**shapes_from_weights(name.split(".", 1)[0], weights), **kwargs})
    match_dtype(model, weights)
    model.load_state_dict(warm_state_dict(model, weights, name))
    return model
