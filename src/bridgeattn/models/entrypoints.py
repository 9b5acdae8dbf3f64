"""Every model this package registers with timm: its ``pretrained_cfg`` entries and its entrypoints.

Registration goes through timm's public ``generate_default_cfgs`` and ``register_model``, from this module (not
timm's ``resnet``/``convnext``/... modules) so that ``timm.list_models(module=...)`` of timm's own modules is
unchanged and every name is listed by ``timm.list_models(module="entrypoints")``.
To add weights or a tag to a model, add an ``"arch.tag"`` entry to :data:`PRETRAINED_CFGS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn
from timm.models import generate_default_cfgs, get_pretrained_cfg, register_model

from ..layers import CoordAttention, FcaModule, GlobalContextBlock, SrmModule
from .bridging import twin_cfg, warm_start_cfg
from .convnext import create_convnext_variant
from .efficientnet import create_mbconv_variant
from .mobilenetv3 import create_mobilenetv3_variant
from .regnet import create_regnet_variant
from .resnet import RESNET_DEPTHS, SMALL_DEPTHS, create_resnet_variant, resnet_cfg, small_resnet_args, small_resnet_cfg
from .swin import create_swin_variant
from .warmstart import plain_twin

# register_model appends every model name
__all__: list[str] = ["BRIDGED_MODELS", "FAMILIES", "PRETRAINED_CFGS", "RESNET_FAMILIES", "WARM_START_CFGS"]

# ResNet-family prefix -> the attention in every block: "bav1"/"bav2" bridge blocks, a timm attention
# name, one of this package's baseline modules, or None for the plain trunk. All share one trunk (stem, init,
# small-input variants), so comparisons differ only in the attention.
RESNET_FAMILIES: dict[str, tuple[str, str | type[nn.Module] | None]] = {
    "bav1_": ("bridge-resnet", "bav1"),
    "bav2_": ("bridge-resnet", "bav2"),
    "plain_": ("baseline-resnet", None),
    "se_": ("baseline-resnet", "se"),
    "eca_": ("baseline-resnet", "eca"),
    "cbam_": ("baseline-resnet", "cbam"),
    "gc_": ("baseline-resnet", GlobalContextBlock),
    "fca_": ("baseline-resnet", FcaModule),
    "ca_": ("baseline-resnet", CoordAttention),
    "srm_": ("baseline-resnet", SrmModule),
}
# name -> (attention, blocks per stage, block kind, trunk arguments)
_RESNETS: dict[str, tuple[str | type[nn.Module] | None, tuple[int, ...], str, dict[str, Any]]] = {}
for _prefix, (_, _attention) in RESNET_FAMILIES.items():
    for _depth, (_kind, _layers) in RESNET_DEPTHS.items():
        _RESNETS[f"{_prefix}resnet{_depth}"] = (_attention, _layers, _kind, {})
    for _depth, _layers in SMALL_DEPTHS.items():
        _RESNETS[f"{_prefix}resnet{_depth}"] = (_attention, _layers, "basic", small_resnet_args(_attention))
_RESNETS.update({
    "bav1_resnext50_32x4d": ("bav1", (3, 4, 6, 3), "bottleneck", dict(cardinality=32, base_width=4)),
    "bav2_resnext50_32x4d": ("bav2", (3, 4, 6, 3), "bottleneck", dict(cardinality=32, base_width=4)),
    "bav2_resnext101_32x4d": ("bav2", (3, 4, 23, 3), "bottleneck", dict(cardinality=32, base_width=4)),
})

# The other families, built as their timm twin with bridged blocks: name -> (family, builder, timm twin, docstring).
# The builder is called as builder(name, pretrained, twin=twin, version="v1"/"v2" (from the name), **kwargs).
BRIDGED_MODELS: dict[str, tuple[str, Callable[..., nn.Module], str, str]] = {
    "bav2_convnext_tiny": ("bridge-convnext", create_convnext_variant, "convnext_tiny",
                           "ConvNeXt-T with BAv2 gates over the depthwise, MLP-hidden and MLP-output taps (r = 16)."),
    "bav2_swin_tiny_patch4_window7_224": (
        "bridge-swin", create_swin_variant, "swin_tiny_patch4_window7_224",
        "Swin-T (patch 4, window 7, 224 px) with BAv2 gates over attention, MLP-hidden and MLP-output taps.\n\n"
        "For small images pass ``img_size`` (e.g. 64); timm shrinks the windows to fit the feature maps.",
    ),
    "bav2_regnety_040": ("bridge-regnet", create_regnet_variant, "regnety_040",
                         "RegNetY-4.0GF with BAv2 gates (taps: the three conv outputs; r = 16) instead of SE."),
    "bav1_efficientnet_b0": ("bridge-efficientnet", create_mbconv_variant, "efficientnet_b0",
                             "EfficientNet-B0 with BAv1 gates (taps: expansion and depthwise outputs; r = 6, Swish)."),
    "bav2_efficientnet_b0": ("bridge-efficientnet", create_mbconv_variant, "efficientnet_b0",
                             "EfficientNet-B0 with BAv2 gates (same taps as BAv1, adaptive selection; r = 6, Swish)."),
    "bav1_mobilenetv3_large_100": ("bridge-mobilenetv3", create_mobilenetv3_variant, "mobilenetv3_large_100",
                                   "MobileNetV3-Large 1.0 with BAv1 gates (r = 6, hard-sigmoid)."),
    "bav2_mobilenetv3_large_100": ("bridge-mobilenetv3", create_mobilenetv3_variant, "mobilenetv3_large_100",
                                   "MobileNetV3-Large 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."),
    "bav1_mobilenetv3_small_100": ("bridge-mobilenetv3", create_mobilenetv3_variant, "mobilenetv3_small_100",
                                   "MobileNetV3-Small 1.0 with BAv1 gates (r = 6, hard-sigmoid)."),
    "bav2_mobilenetv3_small_100": ("bridge-mobilenetv3", create_mobilenetv3_variant, "mobilenetv3_small_100",
                                   "MobileNetV3-Small 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."),
}

# The one table of pretrained cfgs: "arch" or "arch.tag" -> cfg fields. No official weights exist for any
# of these models, so every default entry has preprocessing fields only.
PRETRAINED_CFGS: dict[str, dict[str, Any]] = {
    **{name: small_resnet_cfg() if name.endswith(("resnet20", "resnet56")) else resnet_cfg() for name in _RESNETS},
    **{name: twin_cfg(twin) for name, (_, _, twin, _) in BRIDGED_MODELS.items()},
}

# Warm-start tags: "bav2_resnet50.from_a1_in1k" is timm's plain resnet50.a1_in1k, whose weights load with the gates
# warm-started (docs/warmstart.md). Being the only tags with weights, they are the default of pretrained=True.
# Only the families whose warm start is exact (the others replace an SE the plain weights hold).
_WARM_STARTS = [n for n in _RESNETS if n.startswith(("bav1_", "bav2_")) and n[-2:] not in ("20", "56")]
_WARM_STARTS += ["bav2_convnext_tiny", "bav2_swin_tiny_patch4_window7_224"]
WARM_START_CFGS: dict[str, dict[str, Any]] = {}
for _name in _WARM_STARTS:
    _plain = get_pretrained_cfg(plain_twin(_name))  # the plain twin's default tag
    WARM_START_CFGS[f"{_name}.from_{_plain.tag}"] = warm_start_cfg(f"{_plain.architecture}.{_plain.tag}")

# Read by timm's register_model for every entrypoint below.
default_cfgs = generate_default_cfgs({**PRETRAINED_CFGS, **WARM_START_CFGS})
# family -> its model names, in registration order
FAMILIES: dict[str, list[str]] = {}


def _register(name: str, family: str, build: Callable[..., nn.Module], doc: str, **fixed: Any) -> None:
    """Register a timm entrypoint ``name(pretrained=False, **kwargs)``, defined in this module, that calls
    ``build(name, pretrained, **fixed, **kwargs)``, and list it under ``family``. A caller's keyword that names a
    ``fixed`` one (``layers``, ``version``, ...) is a TypeError, as for a hand-written entrypoint: it would build
    another model under this name."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build(name, pretrained, **fixed, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = doc
    globals()[name] = entry
    register_model(entry)
    FAMILIES.setdefault(family, []).append(name)


for _name, (_attention, _layers, _kind, _extra) in _RESNETS.items():
    _family = RESNET_FAMILIES[_name.split("_", 1)[0] + "_"][0]
    _label = getattr(_attention, "__name__", _attention) or "no"
    _register(_name, _family, create_resnet_variant, f"{_name}: ResNet trunk ({_kind} blocks {_layers}) with {_label} "
              "attention.", layers=_layers, block_kind=_kind, attention=_attention, model_args=_extra)
for _name, (_family, _build, _twin, _doc) in BRIDGED_MODELS.items():
    _register(_name, _family, _build, _doc, twin=_twin, version=_name[2:4])  # "bav2_..." -> "v2"
