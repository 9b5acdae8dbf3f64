"""BA-ResNet and BA-ResNeXt on timm's own ``ResNet`` class, plus the attention baselines on the same trunk.

The BA blocks subclass timm's ``BasicBlock`` / ``Bottleneck`` so every timm feature of the trunk
(``features_only``, ``forward_head``, ``reset_classifier``, ``in_chans``, ``drop_path_rate``, gradient
checkpointing) works unchanged. Only the forward differs: the block pools each conv output (the
taps of SPEC section 2) and rescales the last one with the bridge gate before the residual add.

Small inputs (28-64 px): ``small_input=True`` swaps the 7x7/2 stem and its max-pool for a 3x3/1 conv,
and the CIFAR-style ``*_resnet20`` / ``*_resnet56`` (3 stages of 16/32/64 channels) use that stem by default.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._manipulate import checkpoint_seq
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from ..bridge import BridgeAttention
from ..ops import gated_residual, spatial_mean
from ._validate import check_image_batch
from .registry import register_family

__all__ = [
    "BABasicBlock",
    "BABottleneck",
    "BridgeResNet",
    "RESNET_DEPTHS",
    "SMALL_DEPTHS",
    "create_resnet_variant",
    "register_resnet_family",
]

# depth -> (block kind, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
# CIFAR-style depths (He et al. 2016, section 4.2): 3 stages of 16/32/64 channels, (depth - 2) / 6 blocks each.
SMALL_DEPTHS: dict[int, tuple[int, ...]] = {20: (3, 3, 3), 56: (9, 9, 9)}
SMALL_CHANNELS = (16, 32, 64)
# The gate of a 16-channel stage would have 1 hidden unit at r = 16; keep at least this many (as timm's SE does).
SMALL_RD_MIN_CHANNELS = 8


class _BridgeGateMixin:
    """Builds the ``ba`` module of a block from its tap widths and merges the gated output."""

    def _init_bridge(self, taps: list[int], channels: int, ba_args: dict[str, Any]) -> None:
        self.ba = BridgeAttention(taps, channels, **ba_args)

    def _merge(
        self,
        y: torch.Tensor,
        shortcut: torch.Tensor,
        taps: list[torch.Tensor],
        pooled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``y * ba(taps + [mean(y)]) + shortcut``: pooling, rescale and residual add in as few passes as possible.

        ``pooled`` is ``mean(y)`` when the caller knows it without reading ``y``.
        """
        if self.drop_path is not None and self.training:
            gate = self.ba([*taps, spatial_mean(y) if pooled is None else pooled])
            return self.drop_path(y * gate) + shortcut
        return gated_residual(y, shortcut, lambda last: self.ba([*taps, last]), pooled)


def _pools_through(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``mean_hw(norm(conv(y))) == norm(conv(mean_hw(y)))``: a 1x1 stride-1 conv and a fixed affine norm."""
    if type(conv) is not nn.Conv2d or conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0):
        return False
    if type(norm) is nn.BatchNorm2d:
        return not norm.training and norm.running_mean is not None
    return type(norm) is FrozenBatchNorm2d


class BABasicBlock(_BridgeGateMixin, BasicBlock):
    """timm's BasicBlock with a bridge gate over ``relu(bn1(conv1))`` and ``bn2(conv2)``."""

    def __init__(self, inplanes: int, planes: int, *args: Any, ba_args: dict[str, Any] | None = None, **kwargs: Any):
        kwargs.pop("attn_layer", None)
        super().__init__(inplanes, planes, *args, **kwargs)
        self._init_bridge([self.bn1.num_features, self.bn2.num_features], self.bn2.num_features, ba_args or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y1 = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        y2 = self.bn2(self.conv2(y1))
        return self.act2(self._merge(y2, shortcut, [spatial_mean(y1)]))


class BABottleneck(_BridgeGateMixin, Bottleneck):
    """timm's Bottleneck (also grouped, for ResNeXt) with a bridge gate over its three conv outputs.

    Taps: ``relu(bn1(conv1))``, ``relu(bn2(conv2))`` and ``bn3(conv3)`` before the residual add.
    """

    def __init__(self, inplanes: int, planes: int, *args: Any, ba_args: dict[str, Any] | None = None, **kwargs: Any):
        kwargs.pop("attn_layer", None)
        super().__init__(inplanes, planes, *args, **kwargs)
        taps = [self.bn1.num_features, self.bn2.num_features, self.bn3.num_features]
        self._init_bridge(taps, self.bn3.num_features, ba_args or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y1 = self.act1(self.bn1(self.conv1(x)))
        y2 = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(y1)))))
        y3 = self.bn3(self.conv3(y2))
        s2 = spatial_mean(y2)
        # With fixed BatchNorm statistics (eval, frozen) the last tap follows from the second through the
        # 1x1 conv: one pass over the widest map saved.
        s3 = self.bn3(self.conv3(s2[:, :, None, None])).flatten(1) if _pools_through(self.conv3, self.bn3) else None
        return self.act3(self._merge(y3, shortcut, [spatial_mean(y1), s2], s3))


class BridgeResNet(ResNet):
    """timm ``ResNet`` with input checks and an optional small-input stem.

    Args:
        small_input: use a 3x3 stride-1 stem conv and no max-pool (for 28-64 px images).
        **kwargs: everything timm's ``ResNet`` takes.
    """

    def __init__(self, *args: Any, small_input: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.small_input = small_input
        if small_input:
            stem_out = self.bn1.num_features
            self.conv1 = nn.Conv2d(self.in_chans, stem_out, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
            # The stem no longer reduces by 4: every feature is 4x larger.
            for info in self.feature_info:
                info["reduction"] = max(1, info["reduction"] // 4)

    @property
    def min_input_size(self) -> int:
        """Smallest image side the network accepts: its total stride."""
        return int(self.feature_info[-1]["reduction"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_chans, self.min_input_size, type(self).__name__)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        # timm's ResNet names four stages; the CIFAR-style trunks have three.
        stages = [m for name, m in self.named_children() if name.startswith("layer")]
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(stages, x, flatten=True)
        for stage in stages:
            x = stage(x)
        return x


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


def _small_cfg(**kwargs: Any) -> dict[str, Any]:
    return _cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0, **kwargs)


_BA_KEYS = ("rd_ratio", "rd_channels", "rd_divisor", "rd_min_channels", "selection", "act_layer", "gate_layer")


def create_resnet_variant(
    variant: str,
    pretrained: bool,
    *,
    layers: tuple[int, ...],
    block_kind: str,
    attention: str | type[nn.Module] | None,
    model_args: dict[str, Any],
    **kwargs: Any,
) -> BridgeResNet:
    """Build one registered ResNet-family model.

    ``attention`` is ``"bav1"``/``"bav2"`` for bridge blocks, a timm attention name (``"se"``, ``"eca"``,
    ``"cbam"``, ``"gc"``) or module class for the baselines, or ``None`` for the plain network. Bridge
    settings (``rd_ratio``, ``selection``, ...) may be passed as keyword arguments and reach every block.
    """
    args = dict(model_args, **kwargs)
    block_args = dict(args.pop("block_args", None) or {})
    if attention in ("bav1", "bav2"):
        ba_args = dict(block_args.pop("ba_args", None) or {}, version=attention[2:])
        for key in _BA_KEYS:
            if key in args:
                ba_args[key] = args.pop(key)
        block_args["ba_args"] = ba_args
        block: type[nn.Module] = BABasicBlock if block_kind == "basic" else BABottleneck
    else:
        stray = [k for k in _BA_KEYS if k in args]
        if stray:
            raise ValueError(f"{variant} has no bridge gate; unexpected arguments {stray}")
        if attention is not None:
            block_args.setdefault("attn_layer", attention)
        block = BasicBlock if block_kind == "basic" else Bottleneck
    args.setdefault("zero_init_last", False)
    # One feature per stage plus the stem; the CIFAR-style trunks have 3 stages, not timm's 4.
    feature_cfg = dict(out_indices=tuple(range(len(layers) + 1)))
    return build_model_with_cfg(
        BridgeResNet, variant, pretrained, feature_cfg=feature_cfg,
        block=block, layers=layers, block_args=block_args, **args,
    )


def _make_entry(
    name: str, attention: str | type[nn.Module] | None, layers: tuple[int, ...], kind: str, extra: dict[str, Any]
) -> Callable[..., nn.Module]:
    """A timm entrypoint function named ``name``, registered in this module."""

    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_resnet_variant(
            name, pretrained, layers=layers, block_kind=kind, attention=attention, model_args=extra, **kwargs
        )

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"{name}: ResNet trunk ({kind} blocks {layers}) with {attention or 'no'} attention."
    setattr(sys.modules[__name__], name, entry)
    return register_model(entry)


def register_resnet_family(prefix: str, attention: str | type[nn.Module] | None) -> list[str]:
    """Register ``{prefix}resnet{18..152}`` and the small-input ``{prefix}resnet{20,56}`` with timm.

    Returns the registered names. ``prefix`` is e.g. ``"bav2_"`` or ``"fca_"``; ``attention`` as in
    :func:`create_resnet_variant`.
    """
    cfgs: dict[str, dict[str, Any]] = {}
    for depth, (kind, layers) in RESNET_DEPTHS.items():
        name = f"{prefix}resnet{depth}"
        _make_entry(name, attention, layers, kind, {})
        cfgs[name] = _cfg()
    for depth, layers in SMALL_DEPTHS.items():
        name = f"{prefix}resnet{depth}"
        # timm's stem is 64 wide unless 'deep' (2 x stem_width); the small-input option then
        # replaces that deep stem by a single 3x3 conv.
        extra: dict[str, Any] = dict(
            channels=SMALL_CHANNELS, stem_type="deep", stem_width=SMALL_CHANNELS[0] // 2, small_input=True
        )
        if attention in ("bav1", "bav2"):
            extra["rd_min_channels"] = SMALL_RD_MIN_CHANNELS
        _make_entry(name, attention, layers, "basic", extra)
        cfgs[name] = _small_cfg()
    _register_cfgs(cfgs)
    return list(cfgs)


def _register_cfgs(cfgs: dict[str, dict[str, Any]]) -> None:
    """Attach ``pretrained_cfg`` entries to already registered entrypoints."""
    from timm.models._registry import _model_default_cfgs, _model_has_pretrained, _model_pretrained_cfgs

    for name, cfg in generate_default_cfgs(cfgs).items():
        _model_default_cfgs[name] = cfg
        for tag in cfg.tags:
            full = f"{name}.{tag}" if tag else name
            _model_pretrained_cfgs[full] = cfg.cfgs[tag]
        if cfg.default.url or cfg.default.file or cfg.default.hf_hub_id:
            _model_has_pretrained.add(name)


def _register_resnext() -> list[str]:
    specs = {
        "bav1_resnext50_32x4d": ("bav1", (3, 4, 6, 3)),
        "bav2_resnext50_32x4d": ("bav2", (3, 4, 6, 3)),
        "bav2_resnext101_32x4d": ("bav2", (3, 4, 23, 3)),
    }
    for name, (attention, layers) in specs.items():
        _make_entry(name, attention, layers, "bottleneck", dict(cardinality=32, base_width=4))
    _register_cfgs({name: _cfg() for name in specs})
    return list(specs)


BRIDGE_MODELS = register_family(
    "bridge-resnet",
    register_resnet_family("bav1_", "bav1") + register_resnet_family("bav2_", "bav2") + _register_resnext(),
)
# Baselines on the identical trunk (same stem, same init) so comparisons differ only in the attention.
BASELINE_MODELS = register_family(
    "baseline-resnet",
    register_resnet_family("plain_", None)
    + register_resnet_family("se_", "se")
    + register_resnet_family("eca_", "eca")
    + register_resnet_family("cbam_", "cbam")
    + register_resnet_family("gc_", "gc"),
)
