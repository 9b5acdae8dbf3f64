"""Train/eval transforms of the recipes ``light``, ``imagenet`` (timm's) and ``none`` (docs/data.md), for in-memory
uint8 tensors and for PIL images; each ends in a float ``(C, H, W)`` tensor normalised with the data set's mean/std.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import create_transform
from torchvision.transforms import InterpolationMode, v2

from ..errors import UserError
from .config import DataConfig

RECIPES = ("light", "imagenet", "none")

Transform = Callable[[object], torch.Tensor]


class PadCropFlip(nn.Module):
    """Light-recipe augmentation of a ``(C, S, S)`` tensor: zero-pad, random ``S x S`` crop, horizontal flip (p=0.5);
    as ``v2.RandomCrop(S, padding=pad)`` + ``v2.RandomHorizontalFlip()`` at a quarter of their per-sample cost."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.pad = max(1, int(img_size / 8 + 0.5))  # an eighth of the side, 4 px at 28-32 px

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        out = F.pad(img, (self.pad,) * 4)[..., top:top + h, left:left + w]
        return out.flip(-1) if torch.rand(()) < 0.5 else out


class NormalizeUint8(nn.Module):
    """uint8 ``(C, H, W)`` -> float ``(x / 255 - mean) / std`` in one pass."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(mean).view(-1, 1, 1) * 255, persistent=False)
        self.register_buffer("scale", torch.tensor(std).view(-1, 1, 1) * 255, persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (img.float() - self.shift) / self.scale


def interpolation_mode(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        valid = ", ".join(m.value for m in InterpolationMode)
        raise UserError(f"unknown interpolation {name!r}; use one of: {valid}") from None


def _timm_transform(cfg: DataConfig, train: bool, img_size: int, in_chans: int,
                    mean: tuple[float, ...], std: tuple[float, ...]) -> Transform:
    """timm's ImageNet pipeline on PIL images (mode RGB, or L for one channel); timm leaves the augmentation options
    out of evaluation, and ``crop_pct`` out of training."""
    # timm's "random" interpolation is a training augmentation; evaluation resizes bicubic.
    interpolation = "bicubic" if cfg.interpolation == "random" and not train else cfg.interpolation
    return create_transform((in_chans, img_size, img_size), is_training=train, auto_augment=cfg.auto_augment,
                            color_jitter=cfg.color_jitter, re_prob=cfg.reprob, re_mode="pixel",
                            interpolation=interpolation, crop_pct=cfg.crop_pct, mean=mean, std=std)


def tensor_transform(cfg: DataConfig, train: bool, native_size: int, native_chans: int, img_size: int, in_chans: int,
                     mean: tuple[float, ...], std: tuple[float, ...]) -> Transform:
    """Transform for uint8 ``(native_chans, native_size, native_size)`` tensors held in memory; tensor ops only,
    except the imagenet recipe."""
    # Grayscale takes the luma of 3 channels, or repeats a single one
    steps: list[nn.Module] = [v2.Grayscale(in_chans)] if in_chans != native_chans else []
    if cfg.recipe == "imagenet":
        # timm's pipeline works on PIL images; one conversion per sample is the price of RandAugment.
        to_pil = v2.ToPILImage(mode="L" if in_chans == 1 else "RGB")
        return v2.Compose([*steps, to_pil, _timm_transform(cfg, train, img_size, in_chans, mean, std)])
    if img_size != native_size:
        steps.insert(0, v2.Resize(img_size, interpolation=interpolation_mode(cfg.interpolation), antialias=True))
    return _uint8_pipeline(cfg, train, steps, img_size, mean, std)


def pil_transform(cfg: DataConfig, train: bool, img_size: int, in_chans: int,
                  mean: tuple[float, ...], std: tuple[float, ...]) -> Transform:
    """Transform for PIL images of any size (already in mode RGB, or L for one channel)."""
    if cfg.recipe == "imagenet":
        return _timm_transform(cfg, train, img_size, in_chans, mean, std)
    resize = v2.Resize(img_size, interpolation=interpolation_mode(cfg.interpolation), antialias=True)
    return _uint8_pipeline(cfg, train, [resize, v2.CenterCrop(img_size), v2.PILToTensor()], img_size, mean, std)


def _uint8_pipeline(cfg: DataConfig, train: bool, steps: list[nn.Module], img_size: int,
                    mean: tuple[float, ...], std: tuple[float, ...]) -> Transform:
    """``steps`` to a uint8 ``(C, img_size, img_size)`` tensor, the light recipe's augmentation when training, and
    normalisation."""
    augment = [PadCropFlip(img_size)] if train and cfg.recipe == "light" else []
    return v2.Compose([*steps, *augment, NormalizeUint8(mean, std)])
