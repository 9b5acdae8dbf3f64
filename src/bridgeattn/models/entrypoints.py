"""Every model this package registers with timm: its ``pretrained_cfg`` entries and its entrypoints.

Registration goes through timm's public ``generate_default_cfgs`` and ``register_model``: timm reads this
module's ``default_cfgs`` when an entrypoint is registered, so ``timm.get_pretrained_cfg(name).architecture``
is set and every name is listed by ``timm.list_models(module="entrypoints")``. The entrypoints live in this
module (not in timm's ``resnet``/``convnext``/... modules, nor in modules of the same names) so that importing
the package leaves ``timm.list_models(module=...)`` of timm's own modules unchanged.

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
from .efficientnet import EFFICIENTNET_GATE, create_mbconv_variant
from .mobilenetv3 import MOBILENETV3_TWINS, create_mobilenetv3_variant
from .registry import register_family
from .regnet import create_regnet_variant
from .resnet import RESNET_DEPTHS, SMALL_DEPTHS, create_resnet_variant, resnet_cfg, small_resnet_args, small_resnet_cfg
from .swin import create_swin_variant

# register_model appends every model name
__all__: list[str] = ["PRETRAINED_CFGS", "RESNET_FAMILIES", "WARM_START_CFGS"]

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
_RESNEXTS = {
    "bav1_resnext50_32x4d": ("bav1", (3, 4, 6, 3), "bottleneck", dict(cardinality=32, base_width=4)),
    "bav2_resnext50_32x4d": ("bav2", (3, 4, 6, 3), "bottleneck", dict(cardinality=32, base_width=4)),
    "bav2_resnext101_32x4d": ("bav2", (3, 4, 23, 3), "bottleneck", dict(cardinality=32, base_width=4)),
}
_RESNETS.update(_RESNEXTS)

# The one table of pretrained cfgs: "arch" or "arch.tag" -> cfg fields. No official weights exist for any
# of these models, so every default entry has preprocessing fields only.
PRETRAINED_CFGS: dict[str, dict[str, Any]] = {
    **{name: small_resnet_cfg() if name.endswith(("resnet20", "resnet56")) else resnet_cfg() for name in _RESNETS},
    "bav2_convnext_tiny": twin_cfg("convnext_tiny"),
    "bav2_swin_tiny_patch4_window7_224": twin_cfg("swin_tiny_patch4_window7_224"),
    "bav2_regnety_040": twin_cfg("regnety_040"),
    "bav1_efficientnet_b0": twin_cfg("efficientnet_b0"),
    "bav2_efficientnet_b0": twin_cfg("efficientnet_b0"),
    **{name: twin_cfg(twin) for name, (twin, _) in MOBILENETV3_TWINS.items()},
}

# Warm-start tags: "bav2_resnet50.from_a1_in1k" is timm's plain resnet50.a1_in1k, whose weights load with the gates
# warm-started (docs/warmstart.md). Being the only tags with weights, they are the default of pretrained=True.
# Only the families whose warm start is exact (the others replace an SE the plain weights hold).
_WARM_START_TWINS = {
    **{n: n.split("_", 1)[1] for n in _RESNETS if n.startswith(("bav1_", "bav2_")) and n[-2:] not in ("20", "56")},
    "bav2_convnext_tiny": "convnext_tiny",
    "bav2_swin_tiny_patch4_window7_224": "swin_tiny_patch4_window7_224",
}
WARM_START_CFGS: dict[str, dict[str, Any]] = {
    f"{name}.from_{get_pretrained_cfg(twin).tag}": warm_start_cfg(f"{twin}.{get_pretrained_cfg(twin).tag}")
    for name, twin in _WARM_START_TWINS.items()
}

# Read by timm's register_model for every entrypoint below.
default_cfgs = generate_default_cfgs({**PRETRAINED_CFGS, **WARM_START_CFGS})


def _resnet_entrypoint(name: str) -> Callable[..., nn.Module]:
    """A timm entrypoint function named ``name``, defined in (and registered from) this module."""
    attention, layers, kind, extra = _RESNETS[name]

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_resnet_variant(
            name, pretrained, layers=layers, block_kind=kind, attention=attention, model_args=extra, **kwargs
        )

    label = getattr(attention, "__name__", attention) or "no"
    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"{name}: ResNet trunk ({kind} blocks {layers}) with {label} attention."
    globals()[name] = entry
    return register_model(entry)


for _name in _RESNETS:
    _resnet_entrypoint(_name)
for _prefix, (_family, _) in RESNET_FAMILIES.items():
    register_family(_family, [n for n in _RESNETS if n.startswith(_prefix) and n not in _RESNEXTS])
register_family("bridge-resnet", list(_RESNEXTS))


@register_model
def bav2_convnext_tiny(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ConvNeXt-T with BAv2 gates over the depthwise, MLP-hidden and MLP-output taps (r = 16)."""
    return create_convnext_variant("bav2_convnext_tiny", "convnext_tiny", "v2", pretrained, **kwargs)


@register_model
def bav2_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Swin-T (patch 4, window 7, 224 px) with BAv2 gates over attention, MLP-hidden and MLP-output taps.

    For small images pass ``img_size`` (e.g. 64); timm shrinks the windows to fit the feature maps.
    """
    return create_swin_variant(
        "bav2_swin_tiny_patch4_window7_224", "swin_tiny_patch4_window7_224", "v2", pretrained, **kwargs
    )


@register_model
def bav2_regnety_040(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """RegNetY-4.0GF with BAv2 gates (taps: the three conv outputs; r = 16) instead of SE."""
    return create_regnet_variant("bav2_regnety_040", "regnety_040", "v2", pretrained, **kwargs)


@register_model
def bav1_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-B0 with BAv1 gates (taps: expansion and depthwise outputs; r = 6, Swish)."""
    return create_mbconv_variant(
        "bav1_efficientnet_b0", "efficientnet_b0", "v1", pretrained, EFFICIENTNET_GATE, False, **kwargs
    )


@register_model
def bav2_efficientnet_b0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-B0 with BAv2 gates (same taps as BAv1, adaptive selection; r = 6, Swish)."""
    return create_mbconv_variant(
        "bav2_efficientnet_b0", "efficientnet_b0", "v2", pretrained, EFFICIENTNET_GATE, False, **kwargs
    )


@register_model
def bav1_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Large 1.0 with BAv1 gates (r = 6, hard-sigmoid)."""
    return create_mobilenetv3_variant("bav1_mobilenetv3_large_100", pretrained, **kwargs)


@register_model
def bav2_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Large 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."""
    return create_mobilenetv3_variant("bav2_mobilenetv3_large_100", pretrained, **kwargs)


@register_model
def bav1_mobilenetv3_small_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Small 1.0 with BAv1 gates (r = 6, hard-sigmoid)."""
    return create_mobilenetv3_variant("bav1_mobilenetv3_small_100", pretrained, **kwargs)


@register_model
def bav2_mobilenetv3_small_100(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """MobileNetV3-Small 1.0 with BAv2 gates (BAv1 taps, adaptive selection)."""
    return create_mobilenetv3_variant("bav2_mobilenetv3_small_100", pretrained, **kwargs)


register_family("bridge-convnext", ["bav2_convnext_tiny"])
register_family("bridge-swin", ["bav2_swin_tiny_patch4_window7_224"])
register_family("bridge-regnet", ["bav2_regnety_040"])
register_family("bridge-efficientnet", ["bav1_efficientnet_b0", "bav2_efficientnet_b0"])
register_family("bridge-mobilenetv3", list(MOBILENETV3_TWINS))
