"""BA-ResNet and BA-ResNeXt on timm's own ``ResNet`` class, plus the attention baselines on the same trunk.

The BA blocks subclass timm's ``BasicBlock`` / ``Bottleneck`` (so every timm feature of the trunk works unchanged)
and change only the forward: pool each conv output (the taps of docs/spec.md, section 2) and rescale the last one
with the bridge gate before the residual add. ``small_input=True`` swaps the 7x7/2 stem and its max-pool for a
3x3/1 conv (28-64 px images); the CIFAR-style ``*_resnet20/56`` (3 stages of 16/32/64 channels) use it by default.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, checkpoint_seq
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..layers.bridge import BridgeAttention
from ..layers.gc import GlobalContextBlock
from ..layers.ops import gated_residual, is_fx_proxy, spatial_mean
from .bridging import BRIDGE_KEYS, pop_bridge_args
from .checks import check_image_batch
from .warmstart import pretrained_filter

__all__ = ["BABasicBlock", "BABottleneck", "BridgeResNet", "RESNET_DEPTHS", "SMALL_DEPTHS", "create_resnet_variant",
           "resnet_cfg", "small_resnet_args", "small_resnet_cfg"]

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
    """A timm ResNet block with a gate ``ba`` over its conv outputs (the outputs of ``bn1``, ``bn2`` and ``bn3``)."""

    def __init__(self, *args: Any, ba_args: dict[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.pop("attn_layer", None)
        super().__init__(*args, **kwargs)
        norms = [self.bn1, self.bn2, self.bn3] if hasattr(self, "bn3") else [self.bn1, self.bn2]
        self.ba = BridgeAttention([n.num_features for n in norms], norms[-1].num_features, **(ba_args or {}))

    def warm_start_scale(self) -> str:
        """What the gate rescales: the block's last BatchNorm (models.warmstart)."""
        return "bn3" if hasattr(self, "bn3") else "bn2"

    def _merge(self, y: torch.Tensor, shortcut: torch.Tensor, taps: list[torch.Tensor]) -> torch.Tensor:
        """``y * ba(taps + [mean(y)]) + shortcut``. Scripted and fx-traced models take the plain formula (compilers
        fuse it themselves); eager models the lean one of :mod:`bridgeattn.layers.ops` (fewer passes over ``y``)."""
        if torch.jit.is_scripting() or is_fx_proxy(y) or (self.drop_path is not None and self.training):
            gate = self.ba(taps + [spatial_mean(y)])
            if self.drop_path is not None:
                return self.drop_path(y * gate) + shortcut
            return torch.addcmul(shortcut, y, gate)
        return self._lean_merge(y, shortcut, taps)

    @torch.jit.unused
    def _lean_merge(self, y, shortcut, taps):  # unannotated: TorchScript compiles only a stub
        return gated_residual(y, shortcut, lambda last: self.ba([*taps, last]))


class BABasicBlock(_BridgeGateMixin, BasicBlock):
    """timm's BasicBlock with a bridge gate over ``relu(bn1(conv1))`` and ``bn2(conv2)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y1 = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        y2 = self.bn2(self.conv2(y1))
        return self.act2(self._merge(y2, shortcut, [spatial_mean(y1)]))


class BABottleneck(_BridgeGateMixin, Bottleneck):
    """timm's Bottleneck (also grouped, for ResNeXt) with a bridge gate over ``relu(bn1(conv1))``,
    ``relu(bn2(conv2))`` and ``bn3(conv3)`` before the residual add."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y1 = self.act1(self.bn1(self.conv1(x)))
        y2 = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(y1)))))
        y3 = self.bn3(self.conv3(y2))
        # mean(y3) is pooled from y3 even when a fixed BatchNorm would let it follow from mean(y2): calling conv3
        # and bn3 again would show hooks, observers and counters a second, 1x1 call.
        return self.act3(self._merge(y3, shortcut, [spatial_mean(y1), spatial_mean(y2)]))


class BridgeResNet(ResNet):
    """timm ``ResNet`` (``**kwargs``) with input checks, ``small_input`` and 3- or 4-stage trunks. A 3-stage trunk
    gets an empty ``layer4`` (as timm's ``prune_intermediate_layers`` leaves one), so timm's forward, TorchScript and
    ``forward_intermediates`` work unchanged; its ``feature_info`` and intermediates have 4 entries (stem, 3 stages).
    """

    def __init__(self, *args: Any, small_input: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_chans: int = kwargs.get("in_chans", 3)  # older timm ResNets do not store it
        self.small_input = small_input
        if small_input:
            stem_out = self.bn1.num_features
            self.conv1 = nn.Conv2d(self.in_chans, stem_out, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.maxpool = nn.Identity()
            # The stem no longer reduces by 4: every feature is 4x larger.
            for info in self.feature_info:
                info["reduction"] = max(1, info["reduction"] // 4)
        for module in self.modules():  # timm's trunk init re-draws every conv, GCNet's zero-init last conv included
            if isinstance(module, GlobalContextBlock):
                module.reset_parameters()
        if not hasattr(self, "layer4"):
            self.layer4 = nn.Sequential()
            # The modules after layer3 (all but the layer4 just added) are registered again behind it: the module order
            # still reads as the forward.
            names = [name for name, _ in self.named_children()]
            for name in names[names.index("layer3") + 1:-1]:
                module = getattr(self, name)
                delattr(self, name)
                setattr(self, name, module)
        # Smallest image side the network accepts: its total stride.
        self.min_input_size = int(self.feature_info[-1]["reduction"])

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that timm's optimizer factory keeps out of weight decay: those the attention modules name."""
        names: set[str] = set()
        for prefix, module in self.named_modules():
            if module is not self and hasattr(module, "no_weight_decay"):
                names |= {f"{prefix}.{name}" for name in module.no_weight_decay()}
        return names

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @torch.jit.unused
    def _check_input(self, x):  # unannotated: TorchScript compiles only a stub
        check_image_batch(x, self.in_chans, self.min_input_size, type(self).__name__, self.small_input)

    def _feature_indices(self, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
        """``indices`` of ``forward_intermediates`` over this trunk's ``len(feature_info)`` features."""
        n = len(self.feature_info)
        if indices is None:
            indices = n
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices must be 1..{n} (the last n features), got {indices}")
            return list(range(n - indices, n))
        if any(not -n <= i < n for i in indices):
            raise ValueError(f"feature indices must be in [{-n}, {n}), got {list(indices)}")
        return sorted(i % n for i in indices)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              **kwargs: Any) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates`` with ``indices`` counted over ``feature_info`` (4 or 5 features)."""
        return super().forward_intermediates(x, self._feature_indices(indices), **kwargs)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, **kwargs: Any) -> list[int]:
        """timm's ``prune_intermediate_layers`` with ``indices`` counted over ``feature_info``."""
        return super().prune_intermediate_layers(self._feature_indices(indices), **kwargs)


def resnet_cfg(**kwargs: Any) -> dict[str, Any]:
    """``pretrained_cfg`` fields of an ImageNet-size ResNet-family model (no weights)."""
    return {"url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7), "crop_pct": 0.875,
            "interpolation": "bicubic", "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
            "first_conv": "conv1", "classifier": "fc", "license": "apache-2.0", **kwargs}


def small_resnet_cfg() -> dict[str, Any]:
    """``pretrained_cfg`` fields of a small-input (32 px, 10-class) ``*_resnet20/56``."""
    return resnet_cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(8, 8), crop_pct=1.0)


def small_resnet_args(attention: str | type[nn.Module] | None) -> dict[str, Any]:
    """Trunk arguments of the CIFAR-style ``*_resnet20/56``."""
    # timm's stem is 64 wide unless 'deep' (2 x stem_width); small_input then replaces it by a single 3x3 conv.
    extra: dict[str, Any] = dict(channels=SMALL_CHANNELS, stem_type="deep", stem_width=SMALL_CHANNELS[0] // 2,
                                 small_input=True)
    if attention in ("bav1", "bav2"):
        extra["rd_min_channels"] = SMALL_RD_MIN_CHANNELS
    return extra


def create_resnet_variant(variant: str, pretrained: bool, *, layers: tuple[int, ...], block_kind: str,
                          attention: str | type[nn.Module] | None, model_args: dict[str, Any],
                          **kwargs: Any) -> BridgeResNet:
    """Build one registered ResNet-family model. ``attention``: ``"bav1"``/``"bav2"`` for bridge blocks (whose
    settings, ``rd_ratio``, ``selection``, ..., may be passed as keyword arguments), a timm attention name
    (``"se"``, ``"eca"``, ``"cbam"``, ``"gc"``) or module class for the baselines, ``None`` for the plain network."""
    args = dict(model_args, **kwargs)
    block_args = dict(args.pop("block_args", None) or {})
    if attention in ("bav1", "bav2"):
        block_args["ba_args"] = pop_bridge_args(args, attention[2:], block_args.pop("ba_args", None) or {})
        block: type[nn.Module] = BABasicBlock if block_kind == "basic" else BABottleneck
    else:
        stray = [k for k in BRIDGE_KEYS if k in args]
        if stray:
            raise ValueError(f"{variant} has no bridge gate; unexpected arguments {stray}")
        if attention is not None:
            block_args.setdefault("attn_layer", attention)
        block = BasicBlock if block_kind == "basic" else Bottleneck
    args.setdefault("zero_init_last", False)
    # One feature per stage plus the stem; the CIFAR-style trunks have 3 stages, not timm's 4.
    feature_cfg = dict(out_indices=tuple(range(len(layers) + 1)))
    return build_model_with_cfg(BridgeResNet, variant, pretrained, feature_cfg=feature_cfg,
                                pretrained_filter_fn=pretrained_filter, block=block, layers=layers,
                                block_args=block_args, **args)
