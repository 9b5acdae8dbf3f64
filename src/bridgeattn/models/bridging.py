"""Bridge gates in timm backbones built by timm's own builders, which instantiate their block classes by name.

Rather than copy a builder to change one class name, a bridged model is built as its timm twin (same entrypoint,
``features_only`` and ``in_chans`` handling) and each target block is then *adopted* by its BA subclass (which only
overrides ``forward``) with the gate added as ``block.ba``: one loop for every family, :func:`bridge_blocks`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.nn as nn
from timm.models import get_pretrained_cfg, load_pretrained, model_entrypoint

from ..layers.bridge import BridgeAttention
from .warmstart import pretrained_filter

__all__ = ["BRIDGE_KEYS", "PLACEMENTS", "bridge_blocks", "create_bridged", "placement_gate", "pop_bridge_args",
           "tap_gate", "twin_cfg", "warm_start_cfg"]

# Keyword arguments of a bridged entrypoint that configure the gate (not the timm trunk).
BRIDGE_KEYS = ("rd_ratio", "rd_channels", "rd_divisor", "rd_min_channels", "selection", "act_layer", "gate_layer")
# Where the gate of an SE-style block (MBConv, RegNet) goes (docs/placement.md).
PLACEMENTS = ("se", "output")


def bridge_blocks(model: nn.Module, cls: type[nn.Module], init: Mapping[str, Any]) -> int:
    """Adopt every block of ``model`` whose type is exactly ``cls``'s timm base class into ``cls`` and build its gate
    (``init_bridge(**init)``); returns how many. Blocks that ``cls.bridges(block)`` (when defined) declines stay."""
    takes = getattr(cls, "bridges", lambda block: True)
    blocks = [m for m in model.modules() if type(m) is cls.__mro__[1] and takes(m)]  # listed first: adopting edits
    for block in blocks:
        block.__class__ = cls  # the built timm block becomes its BA subclass, in place
        block.init_bridge(**init)
    return len(blocks)


def pop_bridge_args(kwargs: dict[str, Any], version: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Remove the gate's settings from ``kwargs``; returns ``BridgeAttention`` keyword arguments."""
    ba_args = dict(defaults, version=version)
    for key in BRIDGE_KEYS:
        if key in kwargs:
            ba_args[key] = kwargs.pop(key)
    return ba_args


def tap_gate(taps: Sequence[str], widths: Mapping[str, int], channels: int, ba_args: dict[str, Any],
             model: str) -> tuple[tuple[str, ...], BridgeAttention]:
    """A ``ba_taps`` choice, validated and in block order (the order of ``widths``: tap name -> channels), and the
    gate over those taps that rescales a ``channels``-wide output."""
    taps = (taps,) if isinstance(taps, str) else tuple(taps)
    if not taps or any(t not in widths for t in taps):
        raise ValueError(f"{model}: ba_taps must be a non-empty subset of {list(widths)}, got {list(taps)}")
    taps = tuple(t for t in widths if t in taps)
    return taps, BridgeAttention([widths[t] for t in taps], channels, **ba_args)


def placement_gate(placement: str, mid: int, out: int, ba_args: dict[str, Any]) -> BridgeAttention:
    """The gate of an SE-style block: over its two ``mid``-wide conv outputs, rescaling the second where SE was
    (``"se"``), or over those and the ``out``-wide projection, rescaling the projection (``"output"``)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"ba_placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if placement == "se":
        return BridgeAttention([mid, mid], mid, **ba_args)
    return BridgeAttention([mid, mid, out], out, **ba_args)


def create_bridged(variant: str, pretrained: bool, block: type[nn.Module], *, twin: str, version: str,
                   gate_defaults: Mapping[str, Any] | None = None, stem: str | None = None,
                   twin_filter: Callable[..., Mapping[str, Any]] | None = None, **kwargs: Any) -> nn.Module:
    """Build timm's ``twin`` with ``variant``'s ``pretrained_cfg`` and bridge its blocks with ``block``.

    Each ``ba_<name>`` keyword argument (``ba_taps``, ``ba_placement``, ...) is ``block.init_bridge``'s ``name``;
    the gate settings (:data:`BRIDGE_KEYS`, defaults ``gate_defaults``) and ``version`` are its ``ba_args``; all
    others go to timm's entrypoint. ``stem`` names the stride-2 stem conv that ``small_input=True`` turns into
    stride 1 (families without one reject ``small_input``). ``twin_filter``: timm's ``checkpoint_filter_fn`` of the
    twin's module, which converts the twin's original checkpoints before the warm start.
    """
    bridge_keys = [key for key in kwargs if key.startswith("ba_")]
    init = {key.removeprefix("ba_"): kwargs.pop(key) for key in bridge_keys}
    init["ba_args"] = pop_bridge_args(kwargs, version, dict(gate_defaults or {}))
    small_input = bool(kwargs.pop("small_input", False))
    if small_input and stem is None:
        raise ValueError(f"{variant} has no 3x3 stride-2 stem to shorten; small_input=True exists for the "
                         "MobileNetV3, EfficientNet and RegNet models (Swin takes img_size)")
    cfg = kwargs.get("pretrained_cfg")
    if not cfg or isinstance(cfg, str):  # timm hands the tag of an "arch.tag" name over as a string
        kwargs["pretrained_cfg"] = get_pretrained_cfg(f"{variant}.{cfg}" if cfg else variant)
    if pretrained and kwargs.get("features_only"):
        raise ValueError(f"{variant}: pretrained=True with features_only=True is not supported; build the "
                         "classifier with pretrained=True and take features with forward_intermediates")
    # Weights are loaded after the blocks are bridged: plain twin weights are warm-started, the model's own
    # checkpoints load as they are (pretrained_filter).
    model = model_entrypoint(twin)(pretrained=False, **kwargs)
    if bridge_blocks(model, block, init) == 0:
        raise RuntimeError(f"{variant}: found no {twin} block to bridge")
    if small_input:
        _stride_one_stem(model, stem)
    if pretrained:

        def filter_fn(state_dict: Mapping[str, Any], bridged: nn.Module) -> dict[str, Any]:
            if twin_filter is not None:
                state_dict = twin_filter(state_dict, bridged)
            return pretrained_filter(state_dict, bridged)

        load_pretrained(model, model.pretrained_cfg, num_classes=model.num_classes,
                        in_chans=kwargs.get("in_chans", 3), filter_fn=filter_fn, cache_dir=kwargs.get("cache_dir"))
    return model


def warm_start_cfg(plain: str) -> dict[str, Any]:
    """``pretrained_cfg`` fields of a warm-start tag: where timm keeps the plain ``arch.tag`` weights and their
    preprocessing. Loading them goes through :func:`~bridgeattn.models.warmstart.pretrained_filter`."""
    cfg = get_pretrained_cfg(plain).to_dict()
    return {k: v for k, v in cfg.items() if k not in ("architecture", "tag") and v is not None}


def _stride_one_stem(model: nn.Module, stem: str) -> None:
    """Stride-1 stem for 28-64 px images: every feature map becomes twice as large."""
    conv = model.get_submodule(stem)
    if not isinstance(conv, nn.Conv2d) or conv.stride != (2, 2) or conv.kernel_size != (3, 3):
        raise RuntimeError(f"expected a 3x3 stride-2 stem conv at {stem!r}, got {conv}")
    conv.stride = (1, 1)  # 3x3 with padding 1 keeps the size at stride 1
    info = getattr(model, "feature_info", None)
    for entry in getattr(info, "info", info) or []:
        entry["reduction"] = max(1, entry["reduction"] // 2)


# Data-side fields of a twin's pretrained_cfg that a bridged model shares (no weights, so no URL/hub id).
_CFG_KEYS = ("input_size", "pool_size", "crop_pct", "crop_mode", "interpolation", "mean", "std", "first_conv",
             "classifier", "fixed_input_size", "min_input_size")


def twin_cfg(twin: str) -> dict[str, Any]:
    """A ``pretrained_cfg`` dict for a bridged model: the twin's preprocessing, no weights."""
    base = get_pretrained_cfg(twin).to_dict()
    cfg = {k: base[k] for k in _CFG_KEYS if base.get(k) is not None}
    return {"url": "", "num_classes": 1000, "license": "apache-2.0", **cfg}
