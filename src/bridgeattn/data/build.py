"""``build_datasets(cfg)``: a dataset spec string -> (train, val, DataInfo)."""
from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from ..errors import UserError
from . import synthetic
from .cifar import load_cifar
from .config import DataConfig, DataInfo, data_info
from .fashion_mnist import load_fashion_mnist
from .folder import NATIVE_SIZE, folder_datasets
from .memory import TensorImageDataset
from .shards import shard_datasets
from .stats import CIFAR10, CIFAR100, FASHION_MNIST, IMAGENET
from .transforms import RECIPES, interpolation_mode, make_transform

SPECS = ("fashion-mnist", "folder:PATH", "cifar10:PATH", "cifar100:PATH", "synthetic", "synthetic:N", "wds:DIR_OR_URL")
# (side, channels, stats) of each spec kind before any resizing; folder: checkpoints that do not record their
# preprocessing predate folders' own shapes.
NATIVE = {"fashion-mnist": (28, 1, FASHION_MNIST), "cifar10": (32, 3, CIFAR10), "cifar100": (32, 3, CIFAR100),
          "synthetic": (synthetic.NATIVE_SIZE, 3, synthetic.STATS), "folder": (NATIVE_SIZE, 3, IMAGENET)}


def _check_options(cfg: DataConfig) -> None:
    """``UserError`` for options no data set can use; timm's ``random`` interpolation only with the imagenet recipe."""
    if cfg.recipe not in RECIPES:
        raise UserError(f"unknown data recipe {cfg.recipe!r}; use one of: {', '.join(RECIPES)}")
    if not (cfg.recipe == "imagenet" and cfg.interpolation == "random"):
        interpolation_mode(cfg.interpolation)
    if not 0 < cfg.crop_pct <= 1:
        raise UserError(f"crop_pct must be in (0, 1], got {cfg.crop_pct}")
    if not 0 <= cfg.reprob <= 1:
        raise UserError(f"reprob (random erasing probability) must be in [0, 1], got {cfg.reprob}")
    if cfg.img_size is not None and cfg.img_size < 8:
        raise UserError(f"img_size must be at least 8 pixels, got {cfg.img_size}")
    if cfg.in_chans not in (None, 1, 3):
        raise UserError(f"in_chans must be 1 or 3 (or unset for the data set's own), got {cfg.in_chans}")
    for name in ("train_subset", "val_subset"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive number of samples, got {value}")


def build_datasets(cfg: DataConfig, splits: tuple[str, ...] = ("train", "val")) -> tuple[Dataset, Dataset, DataInfo]:
    """Train and val datasets of items ``(float (C, H, W) tensor, int label)`` for ``cfg.spec`` (docs/data.md);
    ``splits=("val",)`` leaves a folder's ``train/`` files unread and the train set ``None``."""
    _check_options(cfg)
    sets = _build(cfg, splits)
    for split, subset, dataset in (("train", cfg.train_subset, sets[0]), ("val", cfg.val_subset, sets[1])):
        if subset is not None and dataset is not None and len(dataset) < subset:
            warnings.warn(f"{split}_subset {subset} is more than the {len(dataset)} {split} samples of {cfg.spec}: "
                          f"all {len(dataset)} are used", stacklevel=2)
    return sets


def _build(cfg: DataConfig, splits: tuple[str, ...]) -> tuple[Dataset, Dataset, DataInfo]:
    kind, sep, arg = cfg.spec.partition(":")
    if kind == "folder" and arg:
        return folder_datasets(cfg, arg, wanted=splits)
    if kind == "wds" and arg:
        return shard_datasets(cfg, arg)
    if kind == "synthetic":
        if sep and (not arg.isdigit() or int(arg) < 1):
            raise UserError(f"dataset spec {cfg.spec!r}: {arg!r} is not a positive number of samples "
                            "(e.g. synthetic:512)")
        train, val, classes = synthetic.make_synthetic(int(arg) if sep else 512)
    elif kind == "fashion-mnist" and not sep:
        train, val, classes = load_fashion_mnist(download=cfg.download)
    elif kind in ("cifar10", "cifar100") and arg:
        train, val, classes = load_cifar(kind, arg)
    else:
        raise UserError(f"unknown dataset spec {cfg.spec!r}; valid specs: {', '.join(SPECS)}")
    # uint8 (N, C, H, W) tensors held in memory; subsets take the first N
    native = train[0].shape[-1], train[0].shape[1]
    info = data_info(cfg, kind, classes, (*native, NATIVE[kind][2]), kind)
    sets = []
    for (images, labels), is_train, subset in ((train, True, cfg.train_subset), (val, False, cfg.val_subset)):
        transform = make_transform(cfg, is_train, info, native)
        sets.append(TensorImageDataset(images[:subset], labels[:subset], classes, transform))
    return sets[0], sets[1], info


def loader_options(workers: int, device: torch.device) -> dict:
    """DataLoader keyword arguments for ``workers`` processes feeding ``device``: workers live for the whole run; on
    CUDA, batches land in pinned memory (for ``non_blocking`` copies) and each worker keeps 4 batches in flight."""
    cuda = device.type == "cuda"
    options: dict = {"num_workers": workers, "pin_memory": cuda}
    if workers > 0:
        options.update(persistent_workers=True, prefetch_factor=4 if cuda else 2)
    return options
