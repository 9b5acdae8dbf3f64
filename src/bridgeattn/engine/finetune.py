"""Fine-tuning: start a run from other weights (``--init-from``) and give the new gates their own learning rate.

``--init-from`` takes what ``load_model`` takes: a run folder, a checkpoint, a hub folder, a ``.safetensors``
file or a timm name (``resnet50.a1_in1k``). Plain weights are
warm-started (:func:`bridgeattn.models.warmstart.warm_state_dict`: the bridged model starts as the plain function),
weights of the model itself are loaded as they are. ``--gate-lr-scale`` multiplies the learning rate of the
gate parameters that the plain weights lacked: their param groups start at ``lr * scale``, and timm's
schedulers shape every group from its own starting value.
"""
from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from ..errors import UserError, preview_keys
from ..models.warmstart import warm_sites, warm_state_dict
from ..weights.loading import load_model

log = logging.getLogger(__name__)

__all__ = ["gate_parameter_names", "init_from", "optimizer_params"]


def init_from(model: nn.Module, spec: str, unsafe: bool = False) -> dict[str, Any]:
    """Load ``spec``'s weights (any location ``load_model`` takes) into ``model`` in place, warm-starting from
    plain weights. Logs and returns what was loaded and how: ``source``, ``how`` ("warm start" or "own weights"),
    ``gates`` (warm-started), ``loaded`` (tensors taken), ``dropped`` (given but unused: an SE the bridge
    replaces), ``reshaped`` (a classifier kept fresh for another number of classes, a first conv adapted to other
    input channels) and ``exact`` (the model starts as the function the weights computed)."""
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


def optimizer_params(
    model: nn.Module, lr: float, weight_decay: float, filter_bias_and_bn: bool, gate_lr_scale: float = 1.0
) -> nn.Module | list[dict[str, Any]]:
    """What ``create_optimizer_v2`` takes: the model itself, or param groups when the gates get another lr.

    The groups keep timm's rule (no weight decay on biases, norms and ``no_weight_decay()`` names when
    ``filter_bias_and_bn``) and give the gate groups the learning rate ``lr * gate_lr_scale``.
    """
    if gate_lr_scale == 1.0:
        return model
    if gate_lr_scale <= 0:
        raise UserError(f"--gate-lr-scale must be positive, got {gate_lr_scale}")
    gates = gate_parameter_names(model)
    if not gates:  # a plain model in a comparison that scales the gates of the others
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
