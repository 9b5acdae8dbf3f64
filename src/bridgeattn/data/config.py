"""What the data set turned out to be (DataInfo); what the user asks for (DataConfig) is part of the config tree."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import DataConfig


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


def input_origin(cfg: DataConfig, own: str) -> str:
    """Where the input shape of ``cfg`` comes from: the values set, the data set's own (``own``), or both."""
    given = [name for name, value in (("size", cfg.img_size), ("channels", cfg.in_chans)) if value is not None]
    if len(given) == 2:
        return "as set"
    return f"{given[0]} as set, the rest from {own}" if given else f"from {own}"
