"""A model's evaluation preprocessing in timm's data-config vocabulary (``input_size``, ``mean``, ``std``,
``interpolation``, ``crop_pct``, ``crop_mode``), so it travels with the weights."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from timm.data import create_transform

from ..errors import UserError
from .build import NATIVE
from .config import DataConfig, DataInfo, data_info
from .stats import IMAGENET, adapt_stats


@dataclass(frozen=True)
class Preprocessing:
    """Evaluation preprocessing: images ``(C, H, W)`` = ``input_size``, normalised with ``mean``/``std``."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    crop_mode: str = "center"

    @property
    def in_chans(self) -> int:
        return int(self.input_size[0])

    @property
    def img_size(self) -> int:
        return int(self.input_size[-1])

    def to_dict(self) -> dict[str, Any]:
        """timm's data-config keys with JSON types (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], in_chans: int | None = None) -> Preprocessing:
        """From a timm ``pretrained_cfg`` or data config (missing keys take timm's defaults); ``in_chans``
        adapts the channel count and the per-channel statistics as the data sets do."""
        input_size = tuple(int(v) for v in cfg.get("input_size") or (3, 224, 224))
        if len(input_size) != 3:
            raise UserError(f"input_size must be (C, H, W), got {list(input_size)}")
        chans = int(in_chans or input_size[0])
        mean = tuple(map(float, np.atleast_1d(cfg.get("mean", IMAGENET[0]))))
        std = tuple(map(float, np.atleast_1d(cfg.get("std", IMAGENET[1]))))
        mean, std = adapt_stats((mean, std), chans)
        interpolation = str(cfg.get("interpolation") or "bicubic")
        return cls(input_size=(chans, *input_size[1:]), mean=mean, std=std,  # type: ignore[arg-type]
                   interpolation="bicubic" if interpolation == "random" else interpolation,
                   crop_pct=float(cfg.get("crop_pct") or 1.0), crop_mode=str(cfg.get("crop_mode") or "center"))

    def transform(self) -> Any:
        """timm's eval transform for PIL images (mode ``L`` for one channel, ``RGB`` for three)."""
        return create_transform(is_training=False, **self.to_dict())


def eval_preprocessing(cfg: DataConfig, info: DataInfo | None = None) -> Preprocessing:
    """What the evaluation pipeline of ``cfg`` does to an image (crop_pct only for the ``imagenet`` recipe);
    ``info`` (the built data set) is needed where the spec alone does not tell (``wds:``)."""
    if info is None:
        kind = cfg.spec.partition(":")[0]
        if kind not in NATIVE:
            raise UserError(f"unknown dataset spec {cfg.spec!r}: cannot tell its preprocessing")
        info = data_info(cfg, kind, [], NATIVE[kind], kind)
    crop_pct = cfg.crop_pct if cfg.recipe == "imagenet" else 1.0
    return Preprocessing.from_dict({"input_size": (info.in_chans, info.img_size, info.img_size), "mean": info.mean,
                                    "std": info.std, "interpolation": cfg.interpolation, "crop_pct": crop_pct})
