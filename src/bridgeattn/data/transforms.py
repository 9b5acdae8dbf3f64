"""Train/eval transforms of the recipes ``light``, ``imagenet`` (timm's) and ``none`` (docs/data.md), for in-memory
uint8 tensors and for PIL images; each ends in a float ``(C, H, W)`` tensor normalised with the data set's mean/std."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import create_transform
from torchvision.transforms import InterpolationMode, v2

from ..errors import UserError
from .config import DataConfig, DataInfo

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


def make_transform(cfg: DataConfig, train: bool, info: DataInfo, native: tuple[int, int] | None = None) -> Transform:
    """The recipe's transform to a float ``(in_chans, img_size, img_size)`` tensor normalised as ``info`` says: of PIL
    images of any size (in mode RGB, or L for one channel), or, given ``native`` = (side, channels), of uint8 tensors
    of that shape held in memory (tensor ops only, except the imagenet recipe)."""
    img_size, in_chans = info.img_size, info.in_chans
    # a tensor gets in_chans channels: the luma of 3 channels, or 1 channel repeated
    chans = [v2.Grayscale(in_chans)] if native is not None and native[1] != in_chans else []
    if cfg.recipe == "imagenet":
        # timm leaves the augmentation options out of evaluation and crop_pct out of training; its "random"
        # interpolation is a training augmentation, evaluation resizes bicubic
        interpolation = "bicubic" if cfg.interpolation == "random" and not train else cfg.interpolation
        timm = create_transform((in_chans, img_size, img_size), is_training=train, auto_augment=cfg.auto_augment,
                                color_jitter=cfg.color_jitter, re_prob=cfg.reprob, re_mode="pixel",
                                interpolation=interpolation, crop_pct=cfg.crop_pct, mean=info.mean, std=info.std)
        if native is None:
            return timm
        # timm's pipeline works on PIL images: one conversion per sample buys RandAugment
        return v2.Compose([*chans, v2.ToPILImage(mode="L" if in_chans == 1 else "RGB"), timm])
    resize = v2.Resize(img_size, interpolation=interpolation_mode(cfg.interpolation), antialias=True)
    if native is None:  # the short side to img_size, the center square, a uint8 tensor
        steps = [resize, v2.CenterCrop(img_size), v2.PILToTensor()]
    else:
        steps = [resize, *chans] if native[0] != img_size else chans
    if train and cfg.recipe == "light":
        steps.append(PadCropFlip(img_size))
    return v2.Compose([*steps, NormalizeUint8(info.mean, info.std)])
