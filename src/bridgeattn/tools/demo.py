"""The main job: BAv2 and the plain baseline trained on Fashion-MNIST under one budget, side by side."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..config import LaunchOptions, TrainConfig, load_yaml, make_config, resolve_config_path
from ..data import build_datasets
from ..engine import distributed, plots
from ..engine.hardware import probe_cpu_numerics
from ..engine.train import train
from ..files import write_json
from ..models import create_model

log = logging.getLogger(__name__)

DEMO_MODELS = ("bav2_resnet20", "plain_resnet20")
SUMMARY_KEYS = ("top1", "top5", "loss", "best_top1", "params", "epochs", "train_time_s", "train_img_per_s", "output",
                "curves", "confusion")  # what demo.json keeps of each model's summary


def plot_side_by_side(summaries: dict[str, dict[str, Any]], path: Path) -> Path:
    """Validation top-1 and training loss per epoch of every model in one figure, titled with the data set, the
    budget and the seed the models shared."""
    fig, axes = plots.figure((10, 3.8), ncols=2)
    for name, summary in summaries.items():
        history = [json.loads(line) for line in (Path(summary["output"]) / "metrics.jsonl").read_text().splitlines()]
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["top1"] for r in history], marker="o", label=name)
        axes[1].plot(epochs, [r["train_loss"] for r in history], marker="o", label=name)
    for ax, label in zip(axes, ("val top-1 (%)", "train loss")):
        ax.set(xlabel="epoch", ylabel=label)
        plots.integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    s = next(iter(summaries.values()))
    fig.suptitle(f"{s.get('data')}: {s.get('epochs')} epochs, {s.get('steps')} steps of batch "
                 f"{s.get('global_batch')}, seed {s.get('seed')}")
    fig.tight_layout()
    return plots.save(fig, path, dpi=110)


def choose_numerics(cfg: TrainConfig, folder: Path, resume: bool) -> dict[str, Any]:
    """``{"amp", "channels_last", "threads", "reason"}`` for every model of a CPU demo, the fastest for the first model
    (:func:`~bridgeattn.engine.hardware.probe_cpu_numerics`; bf16 only where the recipe asks for ``amp``), or ``{}`` off
    the CPU. Kept in ``folder/numerics.json``: a resumed demo continues with the numerics it started with."""
    path = folder / "numerics.json"
    if resume and path.is_file():
        return json.loads(path.read_text())
    if distributed.resolve_device(cfg.run.device).type != "cpu":
        return {}
    _, _, info = build_datasets(cfg.data, splits=("val",))  # the input shape and classes the models will see
    with torch.random.fork_rng(devices=[]):  # the runs' own seeding stays as if no probe had run
        torch.manual_seed(cfg.run.seed)
        model = create_model(cfg.model.name, num_classes=info.num_classes, in_chans=info.in_chans, **cfg.model.kwargs)
        images = torch.randn(cfg.optim.batch_size, info.in_chans, info.img_size, info.img_size)
        labels = torch.randint(0, info.num_classes, (cfg.optim.batch_size,))
        try_bf16 = cfg.run.amp and cfg.run.amp_dtype == "auto"
        choice, measured = probe_cpu_numerics(model, images, labels, try_bf16=try_bf16)
    precision = "bf16 autocast" if choice["amp"] else "float32"
    layout = "channels_last" if choice["channels_last"] else "NCHW"
    threads = f"{choice['threads']} thread{'s' if choice['threads'] > 1 else ''}"
    reason = f"{precision}, {layout}, {threads}: fastest on this CPU for {cfg.model.name} ({measured})"
    result = {**choice, "reason": reason}
    if not path.exists():  # an existing demo folder is refused by train(); leave its record as it is
        folder.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
    return result


def run_demo(config: str = "cpu_demo", models: Sequence[str] = DEMO_MODELS, output: str | None = None,
             overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
             probe: bool = True) -> dict[str, Any]:
    """Train each of ``models`` with the same recipe, seed and budget into ``OUTPUT/<model>/``; write ``demo.json``
    and ``demo.png`` (both models' curves); return the summaries. ``resume`` continues an interrupted demo; ``probe``
    trains every model with the numerics :func:`choose_numerics` finds fastest (else the recipe's)."""
    recipe = load_yaml(resolve_config_path(config))
    folder = Path(output or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}")
    start = time.perf_counter()
    first = make_config(recipe, overrides or {}, model=models[0]).validate()
    numerics = choose_numerics(first, folder, resume) if probe else {}
    if numerics:
        log.info("demo numerics: %s", numerics["reason"])
    chosen = {k: numerics[k] for k in ("amp", "channels_last") if k in numerics}
    summaries: dict[str, dict[str, Any]] = {}
    threads_before = torch.get_num_threads()
    try:
        if "threads" in numerics:
            torch.set_num_threads(numerics["threads"])
        for name in models:
            cfg = make_config(recipe, chosen, overrides or {}, model=name).validate()  # flags given win over the probe
            options = LaunchOptions(output=str(folder / name), resume="auto" if resume else None, progress=progress)
            summaries[name] = train(cfg, options)
    finally:
        torch.set_num_threads(threads_before)
    result = {"output": str(folder), "config": str(resolve_config_path(config)), "time_s": time.perf_counter() - start,
              "numerics": numerics,
              "models": {name: {k: s.get(k) for k in SUMMARY_KEYS} for name, s in summaries.items()}}
    if all("curves" in s for s in summaries.values()):
        result["plot"] = str(plot_side_by_side(summaries, folder / "demo.png"))
    write_json(folder / "demo.json", result)
    return result
