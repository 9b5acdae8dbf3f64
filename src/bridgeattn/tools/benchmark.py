"""Interleaved throughput benchmark: several models, one run, medians and ratios. Like timm's ``benchmark.py``, but
each repeat times every model once, in round-robin order, so a busy or throttled machine slows all of them alike and
the ratios stay fair (a step: :func:`bridgeattn.engine.hardware.step_function`)."""
from __future__ import annotations

import contextlib
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn as nn

from ..engine.distributed import resolve_device
from ..engine.hardware import amp_dtype_for, step_function, time_steps
from ..errors import UserError
from ..layers.fusion import fuse as fuse_gates
from ..models import create_model
from ..models.cost import count_params, default_input_size

__all__ = ["benchmark", "format_table", "machine_info"]

ModelSpec = str | Callable[[], nn.Module]


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where the numbers come from: device name, threads, library versions."""
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "timm": timm.__version__,
                            "python": platform.python_version(), "threads": torch.get_num_threads(), "cpu": _cpu_name()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _prepare(spec: ModelSpec, batch_size: int, img_size: int | None, device: torch.device, train: bool,
             channels_last: bool, compile: bool, fuse: bool, amp_dtype: torch.dtype | None,
             ) -> tuple[Callable[[], None], int, int]:
    """``(step, params, img_size)`` of one model built and prepared for timing (moved, fused, converted, compiled)."""
    torch.manual_seed(0)
    model = (spec() if callable(spec) else create_model(spec)).to(device).train(train)
    if fuse:
        model = fuse_gates(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    in_chans, _, img_size = default_input_size(model, img_size)
    num_classes = int(getattr(model, "num_classes", 1000)) or 1
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, in_chans, img_size, img_size, generator=generator)
    target = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
    step = step_function(model, x.to(device, memory_format=memory_format), target, amp_dtype, train, compile)
    return step, count_params(model), img_size


def benchmark(models: Sequence[ModelSpec] | Mapping[str, ModelSpec], *, batch_size: int = 8,
              img_size: int | None = None, train: bool = False, channels_last: bool = False, compile: bool = False,
              amp: bool = False, amp_dtype: str = "auto", fuse: bool = False, repeats: int = 7, steps: int = 1,
              warmup: int = 2, device: str | torch.device = "cpu",
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every model, interleaved: ``repeats`` rounds of ``steps`` steps of every model in turn, after ``warmup``
    untimed steps per model (compilation happens there). ``models``: names (``bridgeattn.create_model``, so timm
    names too) or ``{label: name or builder}``; the batch is ``(batch_size, in_chans, img_size, img_size)``,
    ``img_size=None``: each model's own. ``amp`` autocasts with the training policy (``hardware.amp_dtype_for``;
    ``amp_dtype`` forces one); ``fuse`` folds the bridge gates (inference only); ``device="auto"``: cuda if available.
    Returns ``settings``, ``machine`` and ``results``: per model in order ``img_per_s`` and ``step_ms`` (medians),
    ``time_ratio`` (to the first model), ``round_s``, ``params``, ``img_size``; on CUDA ``peak_step_mib``, the most
    memory a warm-up step allocated beyond the weights of every model (all in place by then)."""
    if repeats < 1 or steps < 1 or batch_size < 1 or (img_size is not None and img_size < 1):
        raise UserError("repeats, steps, batch size and image size must be positive")
    if fuse and train:
        raise UserError("--fuse folds the gates for inference; drop --train or --fuse")
    specs = dict(models) if isinstance(models, Mapping) else {str(m): m for m in models}
    if not specs:
        raise UserError("give at least one model")
    device = resolve_device(device) if isinstance(device, str) else device
    say = progress or (lambda msg: None)
    dtype = amp_dtype_for(amp, device, amp_dtype)  # the training policy
    peaks: dict[str, float] = {}
    rounds: dict[str, list[float]] = {label: [] for label in specs}
    with _compile_limits(compile):
        runners = {label: _prepare(spec, batch_size, img_size, device, train, channels_last, compile, fuse, dtype)
                   for label, spec in specs.items()}
        for label, (step, _, _) in runners.items():
            say(f"warm-up {label}")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            time_steps(step, warmup, device)
            if device.type == "cuda":
                peaks[label] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        for r in range(repeats):
            for label, (step, _, _) in runners.items():
                rounds[label].append(time_steps(step, steps, device))
            say(f"round {r + 1}/{repeats}")
    step_s = {label: statistics.median(times) / steps for label, times in rounds.items()}
    first = next(iter(step_s.values()))
    results = [{"model": label, "img_per_s": batch_size / step_s[label], "step_ms": step_s[label] * 1e3,
                "time_ratio": step_s[label] / first, "round_s": rounds[label], "params": params, "img_size": size,
                **({"peak_step_mib": peaks[label]} if label in peaks else {})}
               for label, (_, params, size) in runners.items()]
    settings = dict(batch_size=batch_size, img_size=img_size, train=train, channels_last=channels_last,
                    compile=compile, amp=amp, fuse=fuse, repeats=repeats, steps=steps, warmup=warmup,
                    amp_dtype=str(dtype or torch.float32).removeprefix("torch."))
    return {"settings": settings, "machine": machine_info(device), "results": results}


def _compile_limits(compile: bool) -> contextlib.AbstractContextManager:
    """Models of one family share their forward code; each is a separate graph, not a recompilation to give up
    on, so dynamo's per-function limit is lifted while the benchmark runs (and restored after it)."""
    if not compile:
        return contextlib.nullcontext()
    import torch._dynamo as dynamo  # private: torch.compiler.config has no recompile limit

    limits = {k: max(64, getattr(dynamo.config, k)) for k in ("recompile_limit", "cache_size_limit")
              if hasattr(dynamo.config, k)}
    return dynamo.config.patch(limits)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`benchmark` report."""
    s = report["settings"]
    mode = "train step" if s["train"] else "inference"
    size = f"{s['img_size']} px" if s["img_size"] else "each model's own input size"
    flags = [k for k in ("channels_last", "compile", "fuse") if s[k]]
    if s["amp"]:
        dtype = s.get("amp_dtype", "bfloat16")
        flags.append(f"amp {dtype}" if dtype != "float32" else "amp off (no native bf16)")
    lines = [f"{mode}, batch {s['batch_size']}, {size}, {report['machine']['device']}"
             f" ({report['machine']['threads']} threads){', ' + ', '.join(flags) if flags else ''};"
             f" medians of {s['repeats']} interleaved rounds",
             f"{'model':32s} {'img/s':>9s} {'ms/step':>9s} {'time vs first':>14s}"]
    for r in report["results"]:
        px = "" if s["img_size"] else f" {r.get('img_size', '')} px"
        lines.append(f"{r['model']:32s} {r['img_per_s']:9.2f} {r['step_ms']:9.1f} {r['time_ratio']:14.3f}{px}")
    return "\n".join(lines)
