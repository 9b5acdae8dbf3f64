"""Which registered timm models belong to this project, by family."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any

import timm
import torch.nn as nn

from ..errors import UserError
from .entrypoints import FAMILIES

# timm's own models that the comparisons use as reference points.
TIMM_BASELINES: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
    "resnext50_32x4d", "resnext101_32x4d",
    "mobilenetv3_large_100", "mobilenetv3_small_100", "efficientnet_b0",
    "convnext_tiny", "swin_tiny_patch4_window7_224", "regnety_040",
)


def model_families() -> dict[str, list[str]]:
    """``{family: [model names]}`` of this project's models, plus ``"timm"`` for the timm baselines."""
    return {**{k: list(v) for k, v in FAMILIES.items()}, "timm": list(TIMM_BASELINES)}


def list_models(pattern: str = "*", include_timm: bool = True) -> list[str]:
    """Names of this project's models (and the timm baselines) matching a shell-style ``pattern``."""
    names = [n for family in FAMILIES.values() for n in family]
    if include_timm:
        names += list(TIMM_BASELINES)
    return sorted({n for n in names if fnmatch.fnmatch(n, pattern)})


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with this project's models registered; unknown names raise ``UserError``."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, dict.fromkeys(list_models() + timm.list_models()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown model {name!r} (see `bridgeattn models`){hint}")
    return timm.create_model(name, pretrained=pretrained, **kwargs)
