"""Fine-tuning: start a run from any weights ``load_model`` takes (``--init-from``; plain weights are warm-started,
the model's own loaded as they are) and give the new gates their own learning rate (``--gate-lr-scale``)."""
from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from ..errors import preview_keys
from ..models.warmstart import warm_sites, warm_state_dict
from ..weights.loading import load_model

log = logging.getLogger(__name__)

__all__ = ["gate_parameter_names", "init_from", "optimizer_params"]


def init_from(model: nn.Module, spec: str, unsafe: bool = False) -> dict[str, Any]:
    """Load ``spec``'s weights into ``model`` in place, warm-starting from plain weights. Logs and returns ``source``,
    ``how`` ("warm start" or "own weights"), ``gates``, ``loaded``, ``dropped`` (unused: an SE the bridge replaces),
    ``reshaped`` (a fresh classifier, an adapted first conv) and ``exact`` (starts as the weights' function)."""
    given = load_model(spec, unsafe=unsafe, build=False).state
    state = warm_state_dict(model, given)
    model.load_state_dict(state)
    sites = warm_sites(model)
    own = not sites or any(k.startswith(tuple(s.new for s in sites)) for k in given)
    reshaped = sorted(k for k in given if k in state and given[k].shape != state[k].shape)
    dropped = sorted(k for k in given if k not in state)
    report = {"source": spec, "how": "own weights" if own else "warm start", "gates": 0 if own else len(sites),
              "loaded": len(given) - len(dropped), "dropped": dropped, "reshaped": reshaped,
              "exact": not (dropped or reshaped)}
    name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    head = (f"loaded {report['loaded']} tensors of {name}'s own weights" if own
            else f"warm-started {report['gates']} gates of {name}")
    parts = [f"{len(report[key])} {what} ({preview_keys(report[key], limit=2)})" for key, what in
             (("dropped", "tensors unused"), ("reshaped", "tensors of another shape")) if report[key]]
    log.info(f"{head} from {spec}: " + (f"not exact at step 0: {'; '.join(parts)}" if parts else "exact at step 0"))
    return report


def gate_parameter_names(model: nn.Module) -> set[str]:
    """Names of the gate parameters that a plain twin lacks (``*.ba.*``, the SE baseline's ``*.se.*``)."""
    prefixes = tuple(site.new for site in warm_sites(model))
    return {n for n, _ in model.named_parameters() if prefixes and n.startswith(prefixes)}


def optimizer_params(model: nn.Module, lr: float, weight_decay: float, filter_bias_and_bn: bool,
                     gate_lr_scale: float = 1.0) -> nn.Module | list[dict[str, Any]]:
    """What ``create_optimizer_v2`` takes: the model itself, or param groups keeping timm's weight-decay rule whose
    gate groups start at ``lr * gate_lr_scale`` (timm's schedulers shape each group from its own start)."""
    gates = gate_parameter_names(model) if gate_lr_scale != 1.0 else set()
    if not gates:  # also a plain model in a comparison that scales the gates of the others
        return model
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = filter_bias_and_bn and (param.ndim <= 1 or name.endswith(".bias") or name in skip)
        groups.setdefault((name in gates, no_decay), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
         **({"lr": lr * gate_lr_scale} if gate else {})}
        for (gate, no_decay), params in groups.items()
    ]
