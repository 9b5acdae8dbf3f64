"""The run folder's files: config.yaml, metrics.jsonl/.csv, TensorBoard events, summary.json, eval reports."""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..config import TrainConfig, dump_yaml
from ..errors import UserError
from ..files import atomic_path, write_csv, write_text
from ..weights.checkpoint import CKPT_DIR

__all__ = ["RunRecorder", "check_stored_config", "holds_run", "write_eval_report"]


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("config.yaml", "metrics.jsonl", "summary.json", CKPT_DIR))


def check_stored_config(folder: Path) -> None:
    """Refuse to continue a run whose ``config.yaml`` is missing, empty or unreadable: its settings are unknown,
    and defaults in their place would silently train something else."""
    path = folder / "config.yaml"
    try:
        stored = yaml.safe_load(path.read_text())
        problem = "" if isinstance(stored, dict) and stored else "is empty or not a mapping of option: value"
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = "is missing" if isinstance(exc, FileNotFoundError) else f"cannot be read ({type(exc).__name__})"
    if problem:
        raise UserError(f"{path} {problem}: the run's settings are unknown; restore the file (or start a new run "
                        "in another --output)")


def write_eval_report(metrics: dict[str, Any], class_names: Sequence[str], folder: Path, plots: bool = True,
                      title: str = "") -> dict[str, str]:
    """``per_class.csv`` (class, samples, correct, accuracy) and ``confusion.png`` in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    confusion = metrics["confusion"]
    names = list(class_names) if len(class_names) == len(confusion) else [str(i) for i in range(len(confusion))]
    accuracies = ["" if acc is None else f"{acc:.4f}" for acc in metrics["per_class"]]
    rows = [{"class": i, "name": names[i], "samples": sum(row), "correct": row[i], "accuracy": accuracies[i]}
            for i, row in enumerate(confusion)]
    paths = {"per_class": str(folder / "per_class.csv")}
    write_csv(folder / "per_class.csv", ["class", "name", "samples", "correct", "accuracy"], rows)
    if plots:
        from .plots import plot_confusion

        paths["confusion"] = str(plot_confusion(confusion, names, folder / "confusion.png", title=title))
    return paths


class RunRecorder:
    """Writes a run's files; only rank 0 creates one."""

    def __init__(self, folder: Path, cfg: TrainConfig, start_epoch: int = 0) -> None:
        self.folder = folder
        self.cfg = cfg
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "config.yaml") as tmp:  # a full disk leaves the previous config.yaml whole
            dump_yaml(cfg, tmp)
        self.tb = None
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step drops events a killed attempt wrote after the checkpoint we resume from
                self.tb = SummaryWriter(str(folder / "tensorboard"), purge_step=start_epoch + 1)
            except ImportError:
                warnings.warn("TensorBoard events skipped: install the tensorboard package "
                              "(pip install 'bridgeattn[tensorboard]')", stacklevel=2)

    def write_history(self, history: Sequence[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl and metrics.csv from the full history (consistent after a resume)."""
        write_text(self.folder / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        columns: list[str] = []
        for record in history:  # one value per cell: the learning-rate curve stays in metrics.jsonl
            columns += [k for k in record if k not in columns and not isinstance(record[k], list)]
        write_csv(self.folder / "metrics.csv", columns, list(history))
        if self.tb is not None and history:
            record = history[-1]
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["epoch"])
            self.tb.flush()
        if self.cfg.run.plots and history:
            from .plots import plot_curves

            plot_curves(history, self.folder / "curves.png", title=f"{self.cfg.model.name} on {self.cfg.data.spec}")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
