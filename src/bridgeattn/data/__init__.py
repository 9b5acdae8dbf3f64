"""Dataset specs -> datasets: Fashion-MNIST (default), image folders, CIFAR, shards, synthetic. See docs/data.md."""
from .build import SPECS, build_datasets, loader_options
from .config import DataConfig, DataInfo
from .preprocessing import Preprocessing, eval_preprocessing

__all__ = ["SPECS", "DataConfig", "DataInfo", "Preprocessing", "build_datasets", "eval_preprocessing", "loader_options"]
