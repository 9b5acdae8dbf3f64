"""Hardware-dependent numerics in one place: the autocast dtype, and what a run reports about its choices.

One policy for training, evaluation and benchmarks. On CUDA mixed precision is float16 (with a grad scaler); on a
CPU it is bfloat16, and only where the CPU computes bfloat16 natively (AVX512-BF16 or AMX): elsewhere oneDNN
emulates it and a bf16 step is slower than a float32 one. ``BRIDGEATTN_NO_NATIVE_BF16=1`` makes a fast CPU behave
like one without native bf16; together with ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` it emulates an
AVX2-only machine (docs/speed.md, "Emulating the slow CPU").
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..errors import UserError

NO_NATIVE_BF16_ENV = "BRIDGEATTN_NO_NATIVE_BF16"
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE_BF16: with these oneDNN does not use bf16 instructions
_ONEDNN_ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX) and oneDNN may use it.

    False when ``BRIDGEATTN_NO_NATIVE_BF16`` is set (to anything but ``0``) or ``ONEDNN_MAX_CPU_ISA`` caps oneDNN
    below AVX512_CORE_BF16.
    """
    if os.environ.get(NO_NATIVE_BF16_ENV, "0") not in ("", "0"):
        return False
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def amp_dtype_for(amp: bool, device: torch.device, amp_dtype: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``device``, or None for float32.

    ``auto``: float16 on CUDA; bfloat16 on a CPU with native bf16; float32 on other CPUs. An explicit ``bfloat16``
    is honoured everywhere (slow without native bf16); ``float16`` needs CUDA.
    """
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
        why = ("CPU has native bf16" if device.type == "cpu" and amp_dtype == "auto" else f"--amp-dtype {amp_dtype}")
        precision = f"{str(dtype).removeprefix('torch.')} autocast ({why})"
    elif amp:
        off = ("the CPU has no native bf16, where bf16 autocast is slower than float32; force it with "
               "--amp-dtype bfloat16")
        if os.environ.get(NO_NATIVE_BF16_ENV, "0") not in ("", "0"):
            off = f"native bf16 switched off by {NO_NATIVE_BF16_ENV}"
        precision = f"float32 (--amp off: {off})"
    else:
        precision = "float32 (--amp not set)"
    layout = "channels_last" if channels_last else "contiguous (NCHW)"
    where = device.type
    if device.type == "cpu":
        where = f"CPU, {torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}"
    return f"numerics: {precision}; memory format {layout}; {where}"
