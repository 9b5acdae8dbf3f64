"""What the user asks for (DataConfig) and what the data set turned out to be (DataInfo)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """A dataset spec plus the options that shape its transforms.

    ``spec`` is one of ``fashion-mnist``, ``folder:PATH``, ``cifar10:PATH``, ``cifar100:PATH``, ``synthetic``,
    ``synthetic:N`` (see docs/data.md). ``None`` sizes and channel counts mean "the data set's native value".
    """

    # ``help`` feeds the training flags; ``key`` is the name in recipes and run configs, ``flag`` the option.
    spec: str = field(default="fashion-mnist", metadata={
        "key": "data",
        "help": "dataset spec: fashion-mnist | folder:PATH | cifar10:PATH | cifar100:PATH | synthetic[:N]"})
    img_size: int | None = field(default=None, metadata={"help": "input image size (default: the data set's own)"})
    in_chans: int | None = field(default=None, metadata={
        "help": "input channels, 1 or 3 (default: the data set's own)"})
    recipe: str = field(default="light", metadata={"help": "augmentation recipe: light | imagenet | none"})
    auto_augment: str | None = field(default=None, metadata={
        "flag": "--aa", "help": "timm auto-augment string, e.g. rand-m9-mstd0.5-inc1 (imagenet recipe)"})
    color_jitter: float = field(default=0.4, metadata={"help": "color jitter strength (imagenet recipe)"})
    reprob: float = field(default=0.0, metadata={"help": "random erasing probability (imagenet recipe)"})
    interpolation: str = field(default="bicubic", metadata={"help": "resize interpolation"})
    crop_pct: float = field(default=0.875, metadata={"help": "eval center-crop fraction"})
    train_subset: int | None = field(default=None, metadata={
        "help": "keep N training samples: the first N (N evenly spaced ones in image folders)"})
    val_subset: int | None = field(default=None, metadata={
        "help": "keep N validation samples: the first N (N evenly spaced ones in image folders)"})
    strict: bool = field(default=False, metadata={
        "key": "strict_data", "help": "stop at the first unreadable image instead of skipping it"})
    download: bool = field(default=True, metadata={
        "help": "allow torchvision's download when local data files are absent"})


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
