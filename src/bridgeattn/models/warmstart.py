"""Warm start: a bridged model that computes exactly what its plain twin computes, with gates that learn.

A gate with its generation weight at zero outputs ``gate(0)`` (1/2) everywhere; multiplying the affine parameters
of the last norm of the gated branch by ``1 / gate(0)`` makes ``g * branch`` the plain branch (docs/warmstart.md).
Each BA block names its own site: ``warm_start_scale()`` (the module or parameter of the gated branch to rescale)
and ``warm_start_replaces`` (the plain module the gate replaces, if any). This module reads only that.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import timm
import torch
import torch.nn as nn
from timm.layers import SEModule
from timm.models import adapt_input_conv, clean_state_dict
from timm.models.resnet import BasicBlock, Bottleneck

from ..errors import UserError, preview_keys

__all__ = ["WarmSite", "plain_twin", "pretrained_filter", "warm_sites", "warm_state_dict"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmSite:
    """One gated block of a model and how to make its gate a no-op.

    ``new``: key prefix of the gate's parameters, absent from the plain twin. ``zero``: keys set to zero so
    that the gate outputs ``gate_value`` everywhere. ``scale``: keys of the gated branch multiplied by
    ``1 / gate_value``. ``dropped``: key prefix of a plain module the gate replaces (an SE); its weights
    are not used, and the block is then not exactly its plain twin.
    """

    block: str
    new: str
    zero: tuple[str, ...]
    scale: tuple[str, ...]
    gate_value: float
    dropped: str | None = None


def _gate_value(gate: nn.Module) -> float:
    with torch.no_grad():
        return float(gate(torch.zeros(1)))


def _keys(block: nn.Module, prefix: str, name: str) -> tuple[str, ...]:
    """Keys of ``block``'s parameter ``name``, or of the ``weight`` and ``bias`` of its submodule ``name``."""
    target = attrgetter(name)(block)
    if isinstance(target, nn.Parameter):
        return (prefix + name,)
    return tuple(f"{prefix}{name}.{n}" for n in ("weight", "bias") if getattr(target, n, None) is not None)


def _site(block: nn.Module, path: str) -> WarmSite | None:
    """The warm-start rule of one module, ``None`` if it holds no gate."""
    p = f"{path}." if path else ""
    if hasattr(block, "warm_start_scale"):  # a BA block: it names the branch output its gate rescales
        replaces = getattr(block, "warm_start_replaces", None)
        return WarmSite(path, f"{p}ba.", (f"{p}ba.generation.weight",), _keys(block, p, block.warm_start_scale()),
                        _gate_value(block.ba.gate), dropped=f"{p}{replaces}." if replaces else None)
    if isinstance(block, (BasicBlock, Bottleneck)) and isinstance(getattr(block, "se", None), SEModule):
        # timm's SE baseline on the plain trunk: SE's last layer at zero gives gate(0) as well.
        last = "bn2" if isinstance(block, BasicBlock) else "bn3"
        return WarmSite(path, f"{p}se.", _keys(block, p, "se.fc2"), _keys(block, p, last), _gate_value(block.se.gate))
    return None


def warm_sites(model: nn.Module) -> list[WarmSite]:
    """The warm-start rule of every gated block of ``model``, in module order."""
    sites = [s for path, m in model.named_modules() if (s := _site(m, path)) is not None]
    for site in sites:
        if site.gate_value <= 0.0:
            raise UserError(f"the gate of {site.block or 'the model'} is 0 at 0; warm start needs a gate such as "
                            "sigmoid or hard_sigmoid whose value at 0 is positive")
    return sites


def _cfg_names(model: nn.Module, field: str) -> set[str]:
    """The module names in ``model.pretrained_cfg[field]`` (``first_conv`` or ``classifier``: a name or several)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get(field)
    return {names} if isinstance(names, str) else set(names or ())


def warm_state_dict(model: nn.Module, state_dict: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """The full state dict of ``model`` warm-started from a plain twin's ``state_dict``.

    A state dict that already holds the model's gate keys is the model's own checkpoint and is returned
    (after the same key check) unchanged. Keys are checked strictly: a plain state dict of another depth
    or width raises a one-line ``UserError`` naming the mismatch. A classifier of another size keeps the
    model's fresh initialisation (fine-tuning to a new label set); a first conv for other input channels
    is adapted as timm does.
    """
    name = name or getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    given = clean_state_dict(dict(state_dict))  # without the DDP and torch.compile prefixes
    target = model.state_dict()
    sites = warm_sites(model)
    new = tuple(s.new for s in sites)  # str.startswith(()) is False: no gates, no gate keys
    own = any(k.startswith(new) for k in given)
    dropped = tuple(s.dropped for s in sites if s.dropped)
    expected = {k for k in target if own or not k.startswith(new)}
    unused = {k for k in given if k.startswith(dropped) and k not in target}
    missing = expected - set(given)
    unexpected = set(given) - expected - unused
    first_conv, classifier = _cfg_names(model, "first_conv"), _cfg_names(model, "classifier")
    reset, wrong = set(), {}
    for k in expected & set(given):
        if given[k].shape == target[k].shape:
            continue
        module = k.rsplit(".", 1)[0]
        if module in classifier:
            reset.add(k)
        elif module in first_conv and given[k].dim() == 4 and given[k].shape[0] == target[k].shape[0]:
            given[k] = adapt_input_conv(target[k].shape[1], given[k])
        else:
            wrong[k] = (tuple(given[k].shape), tuple(target[k].shape))
    if missing or unexpected or wrong:
        kind = f"checkpoint of {name}" if own else f"plain weights for {name}"
        parts = []
        if missing:
            parts.append(f"{len(missing)} keys missing ({preview_keys(sorted(missing), limit=2)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({preview_keys(sorted(unexpected), limit=2)})")
        if wrong:
            k = sorted(wrong)[0]
            parts.append(f"{len(wrong)} of another shape ({k}: {wrong[k][0]} vs {wrong[k][1]})")
        twin = "" if own else f"; expected the plain twin ({plain_twin(name)}) at the same depth and width"
        raise UserError(f"{kind} do not fit: {'; '.join(parts)}{twin}")
    if reset:
        _log.warning("%s: classifier %s keeps its fresh initialisation (another number of classes)",
                     name, ", ".join(sorted(reset)))
    out = dict(target)
    for k in expected:
        if k not in reset:
            out[k] = given[k].to(dtype=target[k].dtype) if given[k].is_floating_point() else given[k]
    if own:
        return out
    for site in sites:
        for k in site.zero:
            out[k] = torch.zeros_like(out[k])
        for k in site.scale:
            out[k] = out[k] / site.gate_value
    if unused:
        _log.warning("%s: the bridge replaces %d SE modules of the plain twin; their weights are not used, so the "
                     "warm-started model is not exactly the plain one (docs/warmstart.md)", name,
                     len({s.dropped for s in sites if s.dropped and any(k.startswith(s.dropped) for k in unused)}))
    return out


def pretrained_filter(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """timm ``pretrained_filter_fn``: plain weights are warm-started, the model's own checkpoints pass."""
    return warm_state_dict(model, state_dict)


def plain_twin(name: str) -> str:
    """The plain model whose weights ``name`` warm-starts from: ``bav2_resnet50`` -> ``resnet50``,
    ``bav2_resnet20`` -> ``plain_resnet20`` (timm has no CIFAR-style trunk)."""
    arch = name.split(".", 1)[0]
    stem = arch.split("_", 1)[1] if arch.startswith(("bav1_", "bav2_", "se_")) else arch
    return stem if timm.is_model(stem) and not stem.endswith(("resnet20", "resnet56")) else f"plain_{stem}"
