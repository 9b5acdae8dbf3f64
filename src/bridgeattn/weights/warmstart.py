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
from .loading import load_model, match_dtype, shapes_from_weights
from .safe_load import state_dict_from


def load_plain(plain: Any, unsafe: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a state dict, a model, or any location ``load_model`` takes (a run folder, a
    checkpoint, a hub folder, a weights file, a timm name such as ``resnet50.a1_in1k``)."""
    if isinstance(plain, nn.Module):
        return dict(plain.state_dict())
    if isinstance(plain, Mapping):
        return state_dict_from(plain, source="the plain weights")
    if isinstance(plain, (str, os.PathLike)):
        return load_model(plain, unsafe=unsafe, build=False).state
    raise UserError(f"plain weights must be a state dict, a model, a file or a timm name; got {type(plain).__name__}")


def from_plain(name: str, plain: Any, unsafe: bool = False, **kwargs: Any) -> nn.Module:
    """The model ``name`` (``"bav2_resnet50"``, ``"se_resnet20"``) computing exactly what the plain twin computes,
    in eval and training mode. ``plain``: the twin's weights, as :func:`load_plain` takes them; weights of the
    model itself (with gate keys) load as they are. ``unsafe`` allows pickles that run code (trusted files only);
    ``kwargs`` go to ``create_model`` (``num_classes`` and ``in_chans`` default to the plain weights')."""
    weights = load_plain(plain, unsafe=unsafe)
    model = create_model(name, **{**shapes_from_weights(name.split(".", 1)[0], weights), **kwargs})
    match_dtype(model, weights)
    model.load_state_dict(warm_state_dict(model, weights, name))
    return model
