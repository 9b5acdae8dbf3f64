"""What the data set turned out to be (DataInfo); what the user asks for (DataConfig) is part of the config tree."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import DataConfig
from .stats import Stats, adapt_stats


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
    input_from: str = ""  # where img_size and in_chans come from, e.g. "from 32 sampled images", "as set"

    def describe_input(self) -> str:
        """``input CxHxW (from ...)``: the shape the model sees and where it comes from."""
        shape = f"input {self.in_chans}x{self.img_size}x{self.img_size}"
        return f"{shape} ({self.input_from})" if self.input_from else shape


def data_info(cfg: DataConfig, name: str, classes: list[str], own: tuple[int, int, Stats], origin: str) -> DataInfo:
    """The input shape ``cfg`` sets, else the data set's ``own`` (side, channels, stats; found from ``origin``), and
    the stats adapted to that many channels."""
    own_size, own_chans, own_stats = own
    img_size, in_chans = cfg.img_size or own_size, cfg.in_chans or own_chans
    given = [what for what, value in (("size", cfg.img_size), ("channels", cfg.in_chans)) if value is not None]
    if len(given) == 2:
        input_from = "as set"
    else:
        input_from = f"{given[0]} as set, the rest from {origin}" if given else f"from {origin}"
    mean, std = adapt_stats(own_stats, in_chans)
    return DataInfo(name=name, num_classes=len(classes), in_chans=in_chans, img_size=img_size,
                    class_names=list(classes), mean=mean, std=std, input_from=input_from)
