"""Equal-budget comparison of attention variants on one backbone over several seeds (docs/compare.md): every (model,
seed) cell is trained by :func:`bridgeattn.engine.train` with one recipe and paired with the plain backbone's by seed
(Student-t interval). A cell with a ``summary.json`` is finished, so an interrupted comparison resumes."""
from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from scipy import stats

from ..config import from_flat
from ..data import build_datasets
from ..engine import plots, train
from ..engine.records import holds_run
from ..engine.runlock import RunLock
from ..errors import UserError
from ..files import write_csv, write_json, write_text
from ..models.cost import model_cost  # importing bridgeattn.models registers the models with timm

log = logging.getLogger(__name__)

__all__ = ["SHORT_NAMES", "CompareConfig", "findings", "markdown_table", "paired_difference", "resolve_models",
           "run_compare", "summarize", "write_report"]

SHORT_NAMES: tuple[str, ...] = ("plain", "se", "eca", "cbam", "gc", "fca", "ca", "srm", "bav1", "bav2")
BASELINE = "plain"
# Recipe fields that must agree between a finished cell and the current run for the cell to be reused.
_RECIPE_EXCLUDE = ("model", "seed", "output", "resume", "progress", "workers")


def paired_difference(values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean paired difference ``values - baseline`` (aligned by seed) with its Student-t confidence interval
    (``None`` below two pairs)."""
    diffs = [float(a) - float(b) for a, b in zip(values, baseline, strict=True)]  # ValueError if unpaired
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else None
    out: dict[str, Any] = {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "half_width": None}
    if n >= 2:
        sd = statistics.stdev(diffs)
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        out.update(std=sd, ci_low=mean - half, ci_high=mean + half, half_width=half)
    return out


@dataclass
class CompareConfig:
    """One comparison: variants, data, seeds and the budget (``train_options``: flat options, e.g. ``epochs``)."""

    models: list[str] = field(default_factory=lambda: ["plain", "bav2"])
    backbone: str = "resnet20"
    data: str = "fashion-mnist"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    output: str = "runs/compare"
    train_options: dict[str, Any] = field(default_factory=dict)
    speed: bool = True            # measure inference img/s (interleaved, median)
    speed_batch: int = 64
    speed_reps: int = 7
    progress: bool = False


def resolve_models(models: Sequence[str], backbone: str) -> list[tuple[str, str]]:
    """``[(short, registered name)]``: a short name maps to ``{short}_{backbone}``; full names pass through."""
    out: list[tuple[str, str]] = []
    for short in models:
        name = f"{short}_{backbone}" if timm.is_model(f"{short}_{backbone}") else short
        if not timm.is_model(name):
            raise UserError(f"unknown model {short!r}: neither {short}_{backbone} nor {short} is registered "
                            f"(short names: {', '.join(SHORT_NAMES)}; see `bridgeattn models`)")
        if name in [n for _, n in out]:
            raise UserError(f"model {short!r} is listed twice")
        out.append((short, name))
    if not out:
        raise UserError("no models to compare; pass e.g. --models plain,se,bav2")
    return out


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (what JSON cannot hold becomes its ``repr``)."""
    return json.loads(json.dumps(value, default=repr))


def _train(options: dict[str, Any]) -> dict[str, Any]:
    """The engine's summary of one cell trained with the flat training ``options``."""
    return train(*from_flat(options))


def train_cell(name: str, seed: int, cfg: CompareConfig) -> dict[str, Any]:
    """Train one (model, seed) cell, under its lock, unless its ``summary.json`` exists; returns the cell summary."""
    cell = Path(cfg.output) / "cells" / name / f"seed{seed}"
    with RunLock(cell):
        summary_path = cell / "summary.json"
        options = {"data": cfg.data, **cfg.train_options}
        recipe = {k: v for k, v in sorted(options.items()) if k not in _RECIPE_EXCLUDE}
        if summary_path.is_file():
            done = json.loads(summary_path.read_text())
            if _jsonable(done.get("recipe")) != _jsonable(recipe):
                raise UserError(f"{cell} was trained with a different recipe ({done.get('recipe')} vs {recipe}); "
                                "use another --output or delete that folder")
            done["skipped"] = True
            return done
        run_dir = cell / "run"
        if run_dir.exists():  # an interrupted cell: its partial run is not comparable, train it again
            shutil.rmtree(run_dir)
        result = _train({**options, "model": name, "seed": seed, "output": str(run_dir), "progress": cfg.progress})
        kept = {k: v for k, v in result.items() if k not in ("per_class", "confusion")}
        summary = {"model": name, "seed": seed, "recipe": recipe, **_jsonable(kept)}
        write_json(summary_path, summary)  # atomic: a half-written summary never marks a cell finished
        summary["skipped"] = False
        return summary


def _data_shape(cfg: CompareConfig) -> tuple[int, int, int]:
    """``(num_classes, in_chans, img_size)`` of the compared data set."""
    _, _, info = build_datasets(from_flat({**cfg.train_options, "data": cfg.data})[0].data)
    return info.num_classes, info.in_chans, info.img_size


def measure_inference(names: Sequence[str], num_classes: int, in_chans: int, img_size: int, batch: int = 64,
                      reps: int = 7) -> dict[str, float]:
    """Inference img/s per model: median of ``reps`` rounds, models interleaved (``bridgeattn.tools.benchmark``)."""
    from .benchmark import benchmark

    builders = {n: functools.partial(timm.create_model, n, num_classes=num_classes, in_chans=in_chans) for n in names}
    report = benchmark(builders, batch_size=batch, img_size=img_size, repeats=reps, warmup=1)
    return {r["model"]: r["img_per_s"] for r in report["results"]}


def summarize(cells: Sequence[dict[str, Any]], models: Sequence[tuple[str, str]],
              costs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: top-1 mean/std over seeds, paired difference to plain with 95 % CI, ``costs[name]``."""
    by_model: dict[str, dict[int, dict[str, Any]]] = {}
    for c in cells:
        by_model.setdefault(c["model"], {})[int(c["seed"])] = c
    base_name = next((name for short, name in models if short == BASELINE), None)
    base = by_model.get(base_name, {})
    rows = []
    for short, name in models:
        runs = by_model.get(name, {})
        seeds = sorted(runs)
        top1 = [float(runs[s]["top1"]) for s in seeds]
        paired = [s for s in seeds if s in base] if name != base_name else []  # the baseline: no difference
        diff = paired_difference([runs[s]["top1"] for s in paired], [base[s]["top1"] for s in paired])
        rows.append({"model": short, "name": name, "seeds": seeds, "top1": top1, "top1_mean": _mean(top1),
                     "top1_std": statistics.stdev(top1) if len(top1) >= 2 else None,
                     "top5_mean": _mean(runs[s].get("top5") for s in seeds),
                     "train_img_per_s": _mean(runs[s].get("train_img_per_s") for s in seeds),
                     "train_time_s": _mean(runs[s].get("train_time_s") for s in seeds),
                     "delta_vs_plain": diff["mean"], "delta_ci_low": diff["ci_low"], "delta_ci_high": diff["ci_high"],
                     "delta_std": diff["std"], "paired_seeds": diff["n"], **costs.get(name, {})})
    return rows


def _mean(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _earlier_speeds(path: Path) -> dict[str, float | None]:
    """Inference img/s per model name from an earlier ``results.json`` (none when absent or unreadable)."""
    try:
        rows = json.loads(path.read_text())["models"]
        return {r["name"]: r.get("infer_img_per_s") for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def run_compare(cfg: CompareConfig) -> dict[str, Any]:
    """Train every missing (model, seed) cell, then write the report; returns the ``results.json`` content. The folder
    is locked (``.lock``, as a run's) before anything in it is read or removed: a second comparison is refused."""
    if not cfg.seeds:
        raise UserError("at least one seed is needed")
    repeated = sorted({s for s in cfg.seeds if cfg.seeds.count(s) > 1})
    if repeated:
        raise UserError(f"seed(s) {', '.join(map(str, repeated))} listed twice; each seed is one paired sample")
    models = resolve_models(cfg.models, cfg.backbone)
    output = Path(cfg.output)
    with RunLock(output):
        if holds_run(output):
            raise UserError(f"--output {output} holds a training run; a comparison needs its own folder")
        cells, total = [], len(models) * len(cfg.seeds)
        # Seed-major order: after each round every model has the same number of finished seeds.
        for k, (seed, (_, name)) in enumerate(itertools.product(cfg.seeds, models), 1):
            t0 = time.perf_counter()
            cells.append(train_cell(name, seed, cfg))
            state = "done before" if cells[-1]["skipped"] else f"{time.perf_counter() - t0:.0f} s"
            log.info("[%d/%d] %s seed %d: top-1 %.2f (%s)", k, total, name, seed, float(cells[-1]["top1"]), state)
        num_classes, in_chans, img_size = _data_shape(cfg)
        names = [name for _, name in models]
        if cfg.speed:
            speeds = measure_inference(names, num_classes, in_chans, img_size, cfg.speed_batch, cfg.speed_reps)
        else:  # keep what an earlier run of this comparison measured
            speeds = _earlier_speeds(output / "results.json")
        costs = {}
        for name in names:
            cost = model_cost(name, (in_chans, img_size, img_size), num_classes=num_classes, in_chans=in_chans)
            costs[name] = {"params": cost["params"], "macs": cost["macs"], "infer_img_per_s": speeds.get(name)}
        results = {"config": _jsonable(asdict(cfg)),
                   "data": {"spec": cfg.data, "num_classes": num_classes, "in_chans": in_chans, "img_size": img_size},
                   "environment": {"torch": torch.__version__, "threads": torch.get_num_threads()},
                   "confidence": 0.95, "models": summarize(cells, models, costs),
                   "cells": [{k: v for k, v in c.items() if k != "skipped"} for c in cells]}
        write_report(results, output)
        return results


_CSV_COLUMNS = ["model", "name", "top1_mean", "top1_std", "delta_vs_plain", "delta_ci_low", "delta_ci_high",
                "paired_seeds", "params", "macs", "train_img_per_s", "infer_img_per_s", "top5_mean", "train_time_s",
                "seeds", "top1"]
LIMIT = 100.0  # a difference of two accuracies in percent lies in [-100, +100]; a t interval may reach beyond
VARIES = 0.05  # params or MACs closer than this (relative) carry no information as an axis or a bubble size


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(low: float, high: float) -> str:
    """``[low, high]``; a bound beyond what a difference of accuracies can be reads ``< -100`` / ``> +100``."""
    lo = f"{low:+.2f}" if low >= -LIMIT else f"< -{LIMIT:.0f}"
    hi = f"{high:+.2f}" if high <= LIMIT else f"> +{LIMIT:.0f}"
    return f"[{lo}, {hi}]"


def findings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """In words, one sentence each: which differences to the baseline the paired 95 % intervals show, which they
    do not, and a warning below 3 paired seeds."""
    compared = [r for r in rows if r.get("delta_vs_plain") is not None]
    if not compared:
        return [f"No {BASELINE} model with paired seeds in this comparison: no difference is computed."]
    lines = []
    fewest = min(r["paired_seeds"] for r in compared)
    if fewest < 3:
        t_975 = stats.t(fewest - 1).ppf(0.975) if fewest > 1 else None
        reach = f"a 95 % interval of ±{t_975:.1f} standard errors" if t_975 else "no interval"
        lines.append(f"Warning: only {fewest} paired seed{'s' if fewest > 1 else ''}: {reach} "
                     f"(±{stats.t.ppf(0.975, 2):.1f} with 3 seeds), too few to show any but huge differences; "
                     "run 3 or more (--seeds 3).")
    for r in compared:
        head = f"{r['name']}: {r['delta_vs_plain']:+.2f} points vs {BASELINE}"
        low, high = r.get("delta_ci_low"), r.get("delta_ci_high")
        if low is None:
            lines.append(f"{head}; one paired seed: no interval, no difference shown.")
        elif low > 0 or high < 0:
            lines.append(f"{head} {_interval(low, high)}: {'ahead of' if low > 0 else 'behind'} {BASELINE} "
                         "(the interval excludes 0).")
        else:
            lines.append(f"{head} {_interval(low, high)}: interval contains 0: no difference shown at this budget.")
    if any(r.get("delta_ci_low") is not None and max(-r["delta_ci_low"], r["delta_ci_high"]) > LIMIT
           for r in compared):
        lines.append(f"An interval written < -{LIMIT:.0f} or > +{LIMIT:.0f} reaches beyond what a difference of two "
                     "accuracies can be: the seeds disagree too much for it to bound anything.")
    return lines


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table (top-1 in the engine's unit, percent)."""
    lines = ["| model | top-1 mean ± std | Δ vs plain [95 % CI] | params | MACs | train img/s | inference img/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        top1 = f"{_fmt(r['top1_mean'], '.2f')} ± {_fmt(r['top1_std'], '.2f')}"
        if r.get("delta_vs_plain") is None:
            delta = "(baseline)" if r["model"] == BASELINE else "n/a"
        elif r.get("delta_ci_low") is None:
            delta = f"{r['delta_vs_plain']:+.2f}"
        else:
            delta = f"{r['delta_vs_plain']:+.2f} {_interval(r['delta_ci_low'], r['delta_ci_high'])}"
        params = _fmt(r.get("params"), ",d")
        macs = "n/a" if r.get("macs") is None else f"{r['macs'] / 1e6:.2f} M"
        lines.append(f"| {r['name']} | {top1} | {delta} | {params} | {macs} | "
                     f"{_fmt(r.get('train_img_per_s'), '.0f')} | {_fmt(r.get('infer_img_per_s'), '.0f')} |")
    return "\n".join(lines) + "\n"


def _spread(values: Any) -> float:
    """How far apart the known positive ``values`` are: ``max / min - 1`` (0 for fewer than two)."""
    known = [v for v in values if v]
    return max(known) / min(known) - 1 if len(known) > 1 else 0.0


def plot_chart(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Each model's top-1 difference to plain with its paired 95 % interval (without plain: top-1 mean ± std). x:
    params and bubble area: MACs where they differ by ``VARIES`` or more (the BAv2 paper's Figure 1), else the models
    side by side with one marker size. Intervals are clipped at ±``LIMIT``."""
    from matplotlib.lines import Line2D

    paired = any(r.get("delta_vs_plain") is not None for r in rows)
    pts = []
    for r in rows:
        if paired:
            y = 0.0 if r["model"] == BASELINE else r.get("delta_vs_plain")
            low, high = r.get("delta_ci_low"), r.get("delta_ci_high")
        else:
            y, std = r.get("top1_mean"), r.get("top1_std")
            low, high = (None, None) if y is None or std is None else (y - std, y + std)
        if y is not None:
            pts.append((r, y, low, high))
    param_spread = _spread(r.get("params") for r, *_ in pts)
    mac_spread = _spread(r.get("macs") for r, *_ in pts)
    by_params, by_macs = param_spread >= VARIES, mac_spread >= VARIES
    max_macs = max((r.get("macs") or 0 for r, *_ in pts), default=0) or 1
    fig, ax = plots.figure((7, 5), dpi=120)
    kinds = {"tab:red": "bridge attention (BA)", "tab:blue": "other attention", "tab:gray": "plain baseline"}
    shown, clipped = set(), False
    for i, (r, y, low, high) in enumerate(pts):
        bridge = r["model"].startswith("ba") or r["name"].startswith("ba")
        color = "tab:red" if bridge else ("tab:gray" if r["model"] == BASELINE else "tab:blue")
        shown.add(color)
        x = r["params"] / 1e6 if by_params else i
        size = 900 * (r.get("macs") or max_macs) / max_macs if by_macs else 150
        ax.scatter(x, y, s=size, alpha=0.35, color=color, edgecolors=color)
        if low is not None:
            clipped |= low < -LIMIT or high > LIMIT
            low, high = max(low, -LIMIT), min(high, LIMIT)
            ax.errorbar(x, y, yerr=[[y - low], [high - y]], color=color, capsize=3, lw=1)
        if by_params:
            ax.annotate(r["model"], (x, y), textcoords="offset points", xytext=(7, 4), fontsize=9)
    if paired:
        ax.axhline(0, color="tab:gray", ls="--", lw=0.8)
    # room around the outermost points for their largest bubbles (a 900 pt^2 bubble is ~17 pt in radius)
    ax.margins(0.2)
    if not by_params:
        ax.set_xticks(range(len(pts)), [r["model"] for r, *_ in pts])
    ax.set(xlabel="parameters (M)" if by_params else f"model (params within {param_spread:.1%} of each other)",
           ylabel="Δ top-1 vs plain (points), paired 95 % interval" if paired
           else "top-1 accuracy (%), mean ± std over seeds")
    notes = ["bubble area = MACs" if by_macs else f"MACs within {mac_spread:.1%} of each other: one marker size"]
    if clipped:
        notes.append(f"intervals clipped at ±{LIMIT:.0f}")
    ax.set_title(f"{title or 'top-1 against the plain backbone'}\n{'; '.join(notes)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=[Line2D([], [], marker="o", ls="", ms=9, alpha=0.5, color=c, label=kinds[c])
                       for c in kinds if c in shown], loc="best", fontsize=8)
    fig.tight_layout()
    plots.save(fig, path)


def write_report(results: dict[str, Any], output: Path) -> None:
    """``results.json`` (with ``findings``), ``results.csv``, ``results.md`` and ``results.png`` under ``output``."""
    output = Path(output)
    rows = results["models"]
    notes = findings(rows)
    write_json(output / "results.json", {**results, "findings": notes})
    lists_joined = [{k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in r.items()} for r in rows]
    write_csv(output / "results.csv", _CSV_COLUMNS, lists_joined)
    config, spec = results["config"], results["data"]["spec"]
    seeds = config["seeds"]
    budget = ", ".join(f"{k}={v}" for k, v in (config.get("train_options") or {}).items())
    text = (f"# Comparison on {spec} ({config['backbone']}, {len(seeds)} seeds: {', '.join(map(str, seeds))})\n\n"
            "Top-1 in percent on the validation split. Δ vs plain: mean of the per-seed differences to the plain "
            "backbone, with a 95 % Student-t interval paired by seed. Throughput measured on this machine "
            f"(torch threads: {results.get('environment', {}).get('threads', '?')}).\n\n")
    if budget:
        text += f"Budget (identical for every cell): {budget}.\n\n"
    text += markdown_table(rows) + "\n## What the intervals show\n\n" + "".join(f"- {line}\n" for line in notes)
    write_text(output / "results.md", text)
    plot_chart(rows, output / "results.png", title=f"{spec}, {config['backbone']}, {len(seeds)} seeds")
