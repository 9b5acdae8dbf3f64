"""What the user asks for (DataConfig) and what the data set turned out to be (DataInfo)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """A dataset spec plus the options that shape its transforms.

    ``spec`` is one of ``fashion-mnist``, ``folder:PATH``, ``cifar10:PATH``, ``cifar100:PATH``, ``synthetic``,
    ``synthetic:N`` (see docs/data.md). ``None`` sizes and channel counts mean "the data set's native value".
    """

    spec: str = "fashion-mnist"
    img_size: int | None = None
    in_chans: int | None = None
    recipe: str = "light"
    auto_augment: str | None = None
    color_jitter: float = 0.4
    reprob: float = 0.0
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    train_subset: int | None = None
    val_subset: int | None = None
    strict: bool = False
    download: bool = True


@dataclass
class DataInfo:
    """Facts about the built data sets that models and reports need."""

    name: str
    num_classes: int
    in_chans: int
    img_size: int
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    skipped: list[str] = field(default_factory=list)  # unreadable files left out of the folder data sets
