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


# --- What a GPU run relies on, checked on the CPU: one graph, autocast dtypes, channels_last -------------------

# BA model (tiny, from tests/models/test_timm_contract.py) -> timm's plain twin built with the same arguments
GPU_TWINS = {
    "bav2_resnet20": "plain_resnet20",
    "bav1_resnet50": "plain_resnet50",
    "bav2_convnext_tiny": "convnext_tiny",
    "bav2_swin_tiny_patch4_window7_224": "swin_tiny_patch4_window7_224",
    "bav2_regnety_040": "regnety_040",
    "bav1_efficientnet_b0": "efficientnet_b0",
    "bav1_mobilenetv3_small_100": "mobilenetv3_small_100",
    "bav2_mobilenetv3_large_100": "mobilenetv3_large_100",
}


def _tiny(name: str, twin: bool = False) -> nn.Module:
    from test_timm_contract import FAMILIES, SIZE

    extra = dict(FAMILIES[name])
    if "swin" in name:
        extra["img_size"] = SIZE
    return bridgeattn.create_model(GPU_TWINS[name] if twin else name, num_classes=5, **extra)


@pytest.mark.compile
@pytest.mark.parametrize("name", list(GPU_TWINS))
def test_compiled_training_step_has_no_graph_break(name: str) -> None:
    """``torch.compile(fullgraph=True)`` raises at the first graph break; the eager backend keeps it CPU-cheap."""
    torch._dynamo.reset()
    model = torch.compile(_tiny(name).train(), fullgraph=True, backend="eager")
    model(torch.randn(2, 3, 64, 64)).sum().backward()


def _copies(model: nn.Module, train: bool) -> Counter:
    """4-D copies (clone/contiguous/_to_copy/copy_) of a channels_last forward (and backward when ``train``)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.copies: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            op = func.overloadpacket.__name__
            if op in ("clone", "contiguous", "_to_copy", "copy_") and isinstance(out, torch.Tensor) and out.dim() == 4:
                self.copies[op] += 1
            return out

    model = model.train(train).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with contextlib.nullcontext() if train else torch.no_grad(), Count() as count:
        out = model(x)
        if train:
            out.sum().backward()
    return count.copies


@pytest.mark.parametrize("name", list(GPU_TWINS))
def test_channels_last_survives_every_gate(name: str) -> None:
    """Every gated block returns channels_last maps, and the model copies no more maps than its plain twin."""
    model = _tiny(name)
    outputs: list[torch.Tensor] = []
    for module in model.modules():
        if hasattr(module, "ba"):
            module.register_forward_hook(lambda m, a, out: outputs.append(out))
    for train in (True, False):
        torch.manual_seed(0)
        ba, twin = _copies(model, train), _copies(_tiny(name, twin=True), train)
        assert all(ba[op] <= twin[op] for op in ba), (ba, twin)  # fewer where a gate replaced an SE (in-place act)
    layout = [o for o in outputs if o.dim() == 4 and "swin" not in name]  # Swin's blocks are (B, H, W, C)
    assert len(outputs) > 0 and all(o.is_contiguous(memory_format=torch.channels_last) for o in layout)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lean_merge_under_autocast_matches_the_plain_formula(dtype: torch.dtype, monkeypatch) -> None:
    """The custom autograd functions under ``torch.autocast``: same output dtype, values and gradient dtypes as
    autograd's plain formula. (``torch.amp.custom_fwd/custom_bwd`` do not apply: the functions are written in
    setup_context style, and their ops, addcmul/mul/sum, are not on autocast's cast lists.)"""
    from bridgeattn.models import resnet as resnet_module

    def run(model: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast("cpu", dtype=dtype):
            out = model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        out.float().square().sum().backward()
        return out, [p.grad for p in model.parameters()]

    torch.manual_seed(0)
    model = bridgeattn.create_model("bav2_resnet50", num_classes=5, channels=(8, 16, 32, 64)).train()
    plain = copy.deepcopy(model)
    out, grads = run(model)
    monkeypatch.setattr(resnet_module, "gated_residual",
                        lambda y, shortcut, gate_fn: torch.addcmul(shortcut, y, gate_fn(y.mean((2, 3)))))
    ref, ref_grads = run(plain)
    assert out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)
    assert all(g.dtype == r.dtype == p.dtype for g, r, p in zip(grads, ref_grads, model.parameters()))
    # One norm over all gradients: the selection bias feeds a BatchNorm, its true gradient is 0 and its value noise.
    flat, ref_flat = torch.cat([g.flatten() for g in grads]), torch.cat([r.flatten() for r in ref_grads])
    assert ((flat - ref_flat).norm() / ref_flat.norm()).item() < 0.05
