"""Hardware-dependent numerics, one policy for training, evaluation and benchmarks: float16 autocast on CUDA,
bfloat16 on a CPU only where it computes bf16 natively (elsewhere it is slower than float32); the run's report of
its choices; the one timed training step of the benchmark and the CPU probe (docs/speed.md)."""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..errors import UserError

NO_NATIVE_BF16_ENV = "BRIDGEATTN_NO_NATIVE_BF16"
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: with these oneDNN does not use bf16 instructions
_ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX) and oneDNN may use it: not when
    ``BRIDGEATTN_NO_NATIVE_BF16`` is set (to anything but ``0``) or ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below it."""
    if os.environ.get(NO_NATIVE_BF16_ENV, "0") not in ("", "0"):
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype_for(amp: bool, device: torch.device, amp_dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for float32. ``auto``: float16 on CUDA, bfloat16 on a CPU with
    native bf16, float32 on other CPUs; ``bfloat16`` is honoured everywhere; ``float16`` needs CUDA."""
    if not amp:
        return None
    if amp_dtype == "bfloat16":
        return torch.bfloat16
    if device.type == "cpu":
        if amp_dtype == "float16":
            raise UserError("--amp-dtype float16 needs CUDA; on CPU use --amp-dtype bfloat16 (or auto)")
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op context for float32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def numerics_report(amp: bool, amp_dtype: str, dtype: torch.dtype | None, channels_last: bool,
                    device: torch.device) -> str:
    """One line saying which precision, memory format and thread count a run uses, and why."""
    if dtype is not None:
        why = "CPU has native bf16" if device.type == "cpu" and amp_dtype == "auto" else f"--amp-dtype {amp_dtype}"
        precision = f"{str(dtype).removeprefix('torch.')} autocast ({why})"
    elif not amp:
        precision = "float32 (--amp not set)"
    elif os.environ.get(NO_NATIVE_BF16_ENV, "0") not in ("", "0"):
        precision = f"float32 (--amp off: native bf16 switched off by {NO_NATIVE_BF16_ENV})"
    else:
        precision = ("float32 (--amp off: the CPU has no native bf16, where bf16 autocast is slower than float32; "
                     "force it with --amp-dtype bfloat16)")
    layout = "channels_last" if channels_last else "contiguous (NCHW)"
    where = device.type
    if device.type == "cpu":
        n = torch.get_num_threads()
        where = f"CPU, {n} thread{'s' if n != 1 else ''}, ISA {torch.backends.cpu.get_cpu_capability()}"
    return f"numerics: {precision}; memory format {layout}; {where}"


def step_function(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, dtype: torch.dtype | None,
                  train: bool = True, compile: bool = False) -> Callable[[], None]:
    """One timed step of ``model`` (through ``torch.compile`` with ``compile``) on ``x`` ``(B, C, H, W)``, autocast
    to ``dtype`` (None: float32): a ``no_grad`` forward, or with ``train`` forward, cross-entropy against ``target``
    ``(B,)``, backward and an SGD step with learning rate 0 (the optimizer's work done, the weights unchanged)."""
    forward = torch.compile(model, dynamic=False) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9) if train else None

    def step() -> None:
        with torch.set_grad_enabled(train), autocast(x.device, dtype):
            out = forward(x)
            loss = torch.nn.functional.cross_entropy(out, target) if optimizer else None
        if optimizer and loss is not None:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step


def time_steps(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step``, the device synchronised at both ends only."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _device: None)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - start


def probe_cpu_numerics(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, try_bf16: bool,
                       rounds: int = 3) -> tuple[dict[str, Any], str]:
    """``({"amp", "channels_last", "threads"}, a line of img/s)``: the precision (float32, or bf16 with ``try_bf16``
    on a native-bf16 CPU), memory format and thread count (torch's or one) that train ``model`` fastest on this CPU
    now, by the median of ``rounds`` rounds after a warm-up, each timing one step of every candidate in turn."""
    dtypes = [None, torch.bfloat16] if try_bf16 and cpu_has_native_bf16() else [None]
    threads_before = torch.get_num_threads()
    steps: dict[tuple[torch.dtype | None, bool, int], Callable[[], None]] = {}
    for dtype, cl in itertools.product(dtypes, (False, True)):
        fmt = torch.channels_last if cl else torch.contiguous_format
        net = copy.deepcopy(model).train().to(memory_format=fmt)  # ``model`` itself is left untouched
        step = step_function(net, images.contiguous(memory_format=fmt), labels, dtype)
        steps.update({(dtype, cl, n): step for n in sorted({threads_before, 1}, reverse=True)})
    times: dict[tuple[torch.dtype | None, bool, int], list[float]] = {key: [] for key in steps}
    try:
        for _ in range(rounds + 1):  # the first round warms up
            for key, step in steps.items():
                torch.set_num_threads(key[2])
                times[key].append(time_steps(step, 1, images.device))
    finally:
        torch.set_num_threads(threads_before)
    seconds = {key: statistics.median(t[1:]) for key, t in times.items()}
    dtype, channels_last, threads = min(seconds, key=seconds.get)
    timings = ", ".join(f"{'bf16' if d else 'fp32'} {'channels_last' if cl else 'NCHW'} {n}t {len(images) / s:.0f}"
                        for (d, cl, n), s in seconds.items())
    return ({"amp": dtype is not None, "channels_last": channels_last, "threads": threads},
            f"measured img/s: {timings}")
