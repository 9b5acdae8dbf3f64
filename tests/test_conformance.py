"""What hook-based tools and PyTorch's quantization see of a BA ResNet: the same module calls as in timm's twin.

Every Conv2d/BatchNorm2d runs exactly once per forward in every mode (train, eval, ``no_grad``, ``inference_mode``,
frozen BatchNorm), and no returned map is changed in place more often than in timm's plain network; torch.ao's FX
post-training quantization goes through and stays as close to float as it does for timm's ``resnet18``.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections import Counter

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import freeze_batch_norm_2d
from torchvision.ops.misc import FrozenBatchNorm2d

import bridgeattn

HOOKED = (nn.Conv2d, nn.BatchNorm2d, FrozenBatchNorm2d)
# BA model -> its timm twin (same module names for every conv and BatchNorm)
TWINS = {
    "bav2_resnet18": "resnet18",
    "bav2_resnet50": "resnet50",
    "bav1_resnet50": "resnet50",
    "bav2_resnext50_32x4d": "resnext50_32x4d",
}
MODES = ("train", "eval", "no_grad", "inference_mode", "frozen")
SMALL = {"channels": (16, 32, 64, 128)}  # narrow stages (ResNeXt's 32 groups still fit), the same in both networks


def _census(model: nn.Module, mode: str) -> tuple[Counter, set[str]]:
    """Forward-hook calls per Conv2d/BatchNorm2d name, and the names whose returned map was later changed in place."""
    if mode == "frozen":
        model = freeze_batch_norm_2d(model)
    model.train(mode == "train")
    calls: Counter = Counter()
    seen: list[tuple[str, torch.Tensor, int | None]] = []
    versions = mode != "inference_mode"  # inference tensors have no version counter

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            calls[name] += 1
            seen.append((name, out, out._version if versions else None))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, HOOKED)]
    ctx = {"no_grad": torch.no_grad(), "inference_mode": torch.inference_mode()}.get(mode, contextlib.nullcontext())
    torch.manual_seed(0)
    with ctx:
        model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    changed = {name for name, out, v in seen if versions and out._version != v}
    return calls, changed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(TWINS))
def test_each_module_runs_once_per_forward(name: str, mode: str) -> None:
    ba = bridgeattn.create_model(name, num_classes=4, **SMALL)
    twin = timm.create_model(TWINS[name], num_classes=4, **SMALL)
    ba_calls, ba_changed = _census(ba, mode)
    twin_calls, twin_changed = _census(twin, mode)
    assert set(ba_calls.values()) == {1}
    assert ba_calls == twin_calls
    assert ba_changed <= twin_changed  # timm's in-place ReLU and ``x += shortcut`` are the baseline


def _quantized_error(model: nn.Module) -> tuple[float, float, nn.Module]:
    """torch.ao FX post-training quantization (x86): max |q - f| over the float output's max |f|, top-1 agreement."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model.eval()
    torch.manual_seed(0)
    example = torch.randn(16, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's own deprecation notes
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (example,))
        with torch.no_grad():
            for _ in range(2):
                prepared(torch.randn(16, 3, 64, 64))
        quantized = convert_fx(prepared)
        with torch.no_grad():
            ref, out = model(example), quantized(example)
    error = ((out - ref).abs().max() / ref.abs().max()).item()
    return error, (out.argmax(1) == ref.argmax(1)).float().mean().item(), quantized


@pytest.mark.parametrize("name", ["bav2_resnet18", "bav1_resnet50"])
def test_fx_post_training_quantization_is_close_to_float(name: str) -> None:
    """Tolerance: 0.15 of the output's scale and top-1 agreement >= 0.75 (seeds 0-2: timm's resnet18 0.03-0.06,
    bav2_resnet18 0.05-0.07, bav1_resnet50 0.05-0.08)."""
    torch.manual_seed(0)
    timm_error, _, _ = _quantized_error(timm.create_model("resnet18", num_classes=10, **SMALL))
    torch.manual_seed(0)
    error, agree, quantized = _quantized_error(bridgeattn.create_model(name, num_classes=10, **SMALL))
    kinds = {type(m).__module__ for m in quantized.modules()}
    assert "torch.ao.nn.quantized.modules.conv" in kinds or "torch.ao.nn.intrinsic.quantized.modules.conv_relu" in kinds
    assert timm_error < 0.15 and error < 0.15 and agree >= 0.75
