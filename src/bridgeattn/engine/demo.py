"""The main job: BAv2 and the plain baseline trained on Fashion-MNIST under one budget, side by side."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import LaunchOptions, load_yaml, make_config, resolve_config_path
from ..files import atomic_write
from .records import write_json
from .train import train

DEMO_MODELS = ("bav2_resnet20", "plain_resnet20")


def plot_side_by_side(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Validation top-1 and training loss per epoch of every model in one figure."""
    import json

    from .plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, summary in summaries.items():
        lines = (Path(summary["output"]) / "metrics.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines if line.strip()]
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["top1"] for r in history], marker="o", label=name)
        axes[1].plot(epochs, [r["train_loss"] for r in history], marker="o", label=name)
    for ax, label in zip(axes, ("val top-1 (%)", "train loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def run_demo(config: str = "cpu_demo", models: Sequence[str] = DEMO_MODELS, output: str | None = None,
             overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train each of ``models`` with the same recipe, seed and budget; returns their summaries and the folder.

    Writes ``OUTPUT/<model>/`` run folders, ``OUTPUT/demo.json`` and ``OUTPUT/demo.png`` (both models' curves).
    With ``resume`` an interrupted demo in ``output`` continues where it stopped.
    """
    recipe = load_yaml(resolve_config_path(config))
    folder = Path(output or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    start = time.perf_counter()
    summaries: dict[str, dict[str, Any]] = {}
    for name in models:
        cfg = make_config(recipe, overrides or {}, model=name).validate()
        options = LaunchOptions(output=str(folder / name), resume="auto" if resume else None, progress=progress)
        summaries[name] = train(cfg, options)
    result = {"output": str(folder), "config": str(resolve_config_path(config)), "time_s": time.perf_counter() - start,
              "models": {name: {k: s.get(k) for k in ("top1", "top5", "loss", "best_top1", "params", "epochs",
                                                       "train_time_s", "train_img_per_s", "output", "curves",
                                                       "confusion")}
                         for name, s in summaries.items()}}
    if all("curves" in s for s in summaries.values()):
        result["plot"] = str(plot_side_by_side(summaries, folder / "demo.png"))
    write_json(folder / "demo.json", result)
    return result
