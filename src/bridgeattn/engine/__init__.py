"""Training and evaluation: ``TrainConfig``, ``train(cfg, options) -> summary``, ``evaluate(model, loader) -> metrics``.

See docs/training.md for the recipes, the run folder, resuming and distributed training.
"""
from __future__ import annotations

from ..config import LaunchOptions, TrainConfig, config_from_args, load_yaml, make_config
from ..weights.checkpoint import find_resume, load_checkpoint
from .evaluate import evaluate
from .train import TrainingStopped, train

__all__ = ["LaunchOptions", "TrainConfig", "TrainingStopped", "config_from_args", "evaluate", "find_resume",
           "load_checkpoint", "load_yaml", "make_config", "train"]
