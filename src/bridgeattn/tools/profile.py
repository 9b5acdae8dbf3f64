"""Model cost per stage: parameters, MACs and the activation memory of a training step (whole-model counters:
:mod:`bridgeattn.models.cost`, re-exported here)."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from ..models import create_model
from ..models.cost import count_flops, count_macs, count_params, default_input_size, model_cost, training_mode

__all__ = ["activation_memory", "count_flops", "count_macs", "count_params", "default_input_size", "format_profile",
           "macs_breakdown", "model_cost", "model_stages", "profile_model"]

# Containers whose items are the stages of a network (timm: ``stages``, ``blocks``, ``layers``, ``features``).
_STAGE_CONTAINERS = ("stages", "blocks", "layers", "features")


def model_stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The top-level pieces of a network in call order, stage containers opened one level; for timm's ResNet:
    ``conv1``, ``bn1``, ``act1``, ``maxpool``, ``layer1`` .. ``layer4``, ``global_pool``, ``fc``."""
    stages = []
    for name, child in model.named_children():
        if name in _STAGE_CONTAINERS and isinstance(child, (nn.Sequential, nn.ModuleList)):
            stages.extend((f"{name}.{i}", sub) for i, sub in child.named_children())
        else:
            stages.append((name, child))
    return stages


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage._cdata, storage.nbytes()  # private: data_ptr() is 0 for every tensor on the meta device


def activation_memory(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 8) -> tuple[int, dict[str, int]]:
    """``(total, per stage)`` bytes of the tensors a training-mode forward keeps for backward: the activation memory
    of a training step, the part that grows with the batch. Each saved storage counts once (views and in-place results
    share one); parameters and buffers do not count, the input does. On a ``meta`` model nothing is computed."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    owned = {_storage_key(t)[0] for t in [*model.parameters(), *model.buffers()]}
    # Saved before the first stage runs (the input itself when a stage saves it is counted in that stage).
    saved: dict[int, tuple[int, str]] = {}
    current = ["(input)"]

    def pack(t: torch.Tensor) -> torch.Tensor:
        key, nbytes = _storage_key(t)
        if key not in owned and key not in saved:
            saved[key] = (nbytes, current[0])
        return t

    x = torch.zeros((batch_size, *input_size), device=device, dtype=dtype, requires_grad=True)
    with contextlib.ExitStack() as hooks, training_mode(model, True):
        for name, stage in model_stages(model):
            hooks.enter_context(stage.register_forward_pre_hook(lambda m, a, name=name: current.__setitem__(0, name)))
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
    per_stage: dict[str, int] = {}
    for nbytes, stage_name in saved.values():
        per_stage[stage_name] = per_stage.get(stage_name, 0) + nbytes
    return sum(per_stage.values()), per_stage


def macs_breakdown(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> tuple[int, dict[str, int]]:
    """``(total MACs, MACs of each stage)`` (see :func:`model_stages`) from one eval-mode forward."""
    counter = count_flops(model, input_size, batch_size)
    counts, root = counter.get_flop_counts(), type(model).__name__
    stages = {name: sum(counts.get(f"{root}.{name}", {}).values()) // 2 for name, _ in model_stages(model)}
    return int(counter.get_total_flops()) // 2, stages


def profile_model(model: str | nn.Module, img_size: int | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Params, MACs per image (eval-mode forward, ``torch.utils.flop_counter``), a per-stage breakdown and the
    activation memory of a training step of ``batch_size`` images; a ``model`` name is built on the ``meta`` device."""
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        with torch.device("meta"):
            model = create_model(model)
    size = default_input_size(model, img_size)
    total_macs, macs = macs_breakdown(model, size)  # one counting pass for the total and the stages
    act_total, act_stages = activation_memory(model, size, batch_size)
    stages = [{"name": n, "params": count_params(m), "macs": macs.get(n, 0), "activation_bytes": act_stages.get(n, 0)}
              for n, m in model_stages(model)]
    return {"model": name, "input_size": list(size), "batch_size": batch_size, "params": count_params(model),
            "trainable_params": count_params(model, trainable_only=True), "macs": total_macs,
            "activation_bytes": act_total, "stages": stages}


def format_profile(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`profile_model`'s report."""
    size = "x".join(str(s) for s in report["input_size"])
    mib = 2**20
    lines = [f"{report['model']}  input {size}",
             f"params {report['params']:,}  MACs {report['macs'] / 1e9:.3f} G per image",
             f"activation memory of a training step, batch {report['batch_size']}: "
             f"{report['activation_bytes'] / mib:.1f} MiB (tensors saved for backward, input included)", "",
             f"{'stage':16s} {'params':>12s} {'MACs (M)':>10s} {'MACs %':>7s} {'act. MiB':>9s}"]
    total_macs = max(1, report["macs"])
    for s in report["stages"]:
        lines.append(f"{s['name']:16s} {s['params']:12,d} {s['macs'] / 1e6:10.1f} {100 * s['macs'] / total_macs:6.1f}%"
                     f" {s['activation_bytes'] / mib:9.2f}")
    return "\n".join(lines)
