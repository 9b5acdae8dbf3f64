"""What the data set turned out to be (DataInfo); what the user asks for (DataConfig) is part of the config tree."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import DataConfig

__all__ = ["DataConfig", "DataInfo"]


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
