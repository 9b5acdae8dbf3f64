"""Import checkpoints of the reference BA-Net implementations (SPEC section 5) into our models.

Stem, stages and head already share torchvision's names with timm's ResNet; only the keys of each block's
bridge gate differ. Per block (prefix ``layerS.B.ba.``), reference -> ours:

    BAv2  ``fusions.{i}.0.weight``  -> ``integration.{i}.weight``
          ``proj.weight|bias``      -> ``selection.weight|bias``
          ``generation.0.*`` (BN1d) -> ``norm.*``
          ``generation.2.weight``   -> ``generation.weight``
    BAv1  ``pre_fusions.{i}.0|1``   -> ``integration.{i}`` / ``integration_norm.{i}``   (taps before the last)
          ``cur_fusion.0|1``        -> ``integration.{n-1}`` / ``integration_norm.{n-1}`` (the last tap)
          ``fusions.{i}.0|1``       -> ``integration.{i}`` / ``integration_norm.{i}``   (second BAv1 layout)
          ``generation.1.weight``   -> ``generation.weight``
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import UserError

__all__ = [
    "convert_official_state_dict",
    "detect_layout",
    "load_state_dict_strict",
    "convert_checkpoint",
    "unwrap_checkpoint",
]

# Containers the reference training scripts wrap their weights in, in the order they are tried.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
_BA = re.compile(r"^(?P<block>(?:.+\.)?ba)\.(?P<rest>.+)$")


def unwrap_checkpoint(obj: Any) -> dict[str, torch.Tensor]:
    """The bare state dict inside a checkpoint: ``{'model': sd, ...}``, ``{'state_dict': sd, ...}`` or ``sd``.

    Removes DataParallel/DDP ``module.`` prefixes.
    """
    if not isinstance(obj, Mapping):
        raise UserError(f"expected a checkpoint dict or state dict, got {type(obj).__name__}")
    for key in _WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError(
            f"no tensors found in the checkpoint (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
            f"expected a state dict or one under {' / '.join(repr(k) for k in _WRAPPER_KEYS)}"
        )
    out = {}
    for key, value in tensors.items():
        while key.startswith("module."):
            key = key[len("module."):]
        out[key] = value
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"bav2"``, ``"bav1"`` (pre_fusions/cur_fusion), ``"bav1-fusions"`` (second BAv1 layout) or ``"ours"``."""
    keys = [m.group("rest") for k in state_dict if (m := _BA.match(k))]
    if any(k.startswith(("pre_fusions.", "cur_fusion.")) for k in keys):
        return "bav1"
    if any(re.match(r"fusions\.\d+\.1\.", k) for k in keys):
        return "bav1-fusions"
    if any(k.startswith(("fusions.", "proj.")) for k in keys):
        return "bav2"
    if any(k.startswith("integration.") for k in keys):
        return "ours"
    raise UserError("the checkpoint has no bridge-attention keys ('ba.*'); is it a BA-Net checkpoint?")


def _normalise_version(version: str) -> str:
    v = str(version).lower().removeprefix("ba")
    if v not in ("v1", "v2", "auto"):
        raise UserError(f"version must be 'bav1', 'bav2' or 'auto', got {version!r}")
    return v


def _rename_v2(rest: str) -> str | None:
    if m := re.fullmatch(r"fusions\.(\d+)\.0\.weight", rest):
        return f"integration.{m.group(1)}.weight"
    if m := re.fullmatch(r"proj\.(weight|bias)", rest):
        return f"selection.{m.group(1)}"
    if m := re.fullmatch(r"generation\.0\.(\w+)", rest):
        return f"norm.{m.group(1)}"
    if rest == "generation.2.weight":
        return "generation.weight"
    return None


def _rename_v1(rest: str, last_tap: int) -> str | None:
    if m := re.fullmatch(r"(?:pre_fusions|fusions)\.(\d+)\.0\.weight", rest):
        return f"integration.{m.group(1)}.weight"
    if m := re.fullmatch(r"(?:pre_fusions|fusions)\.(\d+)\.1\.(\w+)", rest):
        return f"integration_norm.{m.group(1)}.{m.group(2)}"
    if rest == "cur_fusion.0.weight":
        return f"integration.{last_tap}.weight"
    if m := re.fullmatch(r"cur_fusion\.1\.(\w+)", rest):
        return f"integration_norm.{last_tap}.{m.group(1)}"
    if rest == "generation.1.weight":
        return "generation.weight"
    return None


def convert_official_state_dict(obj: Any, version: str) -> dict[str, torch.Tensor]:
    """Rename a reference BA-Net checkpoint to this package's keys.

    Args:
        obj: what ``torch.load`` returns for a reference checkpoint (``{'model': ...}`` for BAv2,
            ``{'state_dict': ...}`` with ``module.`` prefixes for BAv1) or a bare state dict.
        version: ``"bav1"``/``"v1"``, ``"bav2"``/``"v2"``, or ``"auto"`` to detect it from the keys.

    Returns a state dict for ``bav1_*`` / ``bav2_*`` ResNets; load it with :func:`load_state_dict_strict`
    for a clear error when it does not fit the model. Checkpoints already in our layout pass through.
    """
    state_dict = unwrap_checkpoint(obj)
    layout = detect_layout(state_dict)
    version = _normalise_version(version)
    found = "v2" if layout == "bav2" else "v1" if layout.startswith("bav1") else None
    if version != "auto" and found is not None and found != version:
        raise UserError(
            f"the checkpoint has the BA{found} layout ({layout} keys) but BA{version} was asked; "
            f"use --from ba{found} and a ba{found}_* model"
        )
    if layout == "ours":
        return dict(state_dict)

    # BAv1's 'cur_fusion' is the last tap: its index is the number of 'pre_fusions' of the same block.
    pre_taps: dict[str, int] = {}
    for key in state_dict:
        if (m := _BA.match(key)) and (t := re.match(r"pre_fusions\.(\d+)\.", m.group("rest"))):
            pre_taps[m.group("block")] = max(pre_taps.get(m.group("block"), 0), int(t.group(1)) + 1)

    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        m = _BA.match(key)
        if m is None:
            out[key] = value
            continue
        block, rest = m.group("block"), m.group("rest")
        new = _rename_v2(rest) if found == "v2" else _rename_v1(rest, pre_taps.get(block, 0))
        if new is None:
            unknown.append(key)
            continue
        out[f"{block}.{new}"] = value
    if unknown:
        raise UserError(f"unrecognised bridge-attention keys for the {layout} layout: {_preview(unknown)}")
    return out


def _preview(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` that names missing, unexpected and mis-shaped keys.

    Raises ``UserError`` (nothing is loaded) when the checkpoint does not fit the model.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing in the {source}: {_preview(missing)}")
        if unexpected:
            parts.append(f"not in the model: {_preview(unexpected)}")
        if mis_shaped:
            parts.append(f"shape (file vs model): {_preview(mis_shaped)}")
        raise UserError(
            f"the {source} does not fit {type(model).__name__}: " + "; ".join(parts)
            + " (check --model: depth, bav1 vs bav2, --num-classes)"
        )
    model.load_state_dict(state_dict, strict=True)


def convert_checkpoint(
    path: str | Path,
    output: str | Path,
    model_name: str,
    version: str = "auto",
    unsafe: bool = False,
    num_classes: int | None = None,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Convert a reference checkpoint file to ``output`` (``.safetensors``), checked against ``model_name``.

    ``num_classes`` defaults to the rows of the checkpoint's ``fc.weight``. Returns a summary dict
    (``layout``, ``model``, ``num_classes``, ``tensors``, ``output``).
    """
    from safetensors.torch import save_file

    from . import create_model
    from .safe_load import load_file

    output = Path(output)
    if output.suffix != ".safetensors":
        raise UserError(f"the output must be a .safetensors file, got {output}")
    raw = load_file(path, unsafe=unsafe)
    layout = detect_layout(unwrap_checkpoint(raw))
    state_dict = convert_official_state_dict(raw, version)
    if num_classes is None and "fc.weight" in state_dict:
        num_classes = int(state_dict["fc.weight"].shape[0])
    if num_classes is not None:
        model_kwargs["num_classes"] = num_classes
    model = create_model(model_name, **model_kwargs)
    load_state_dict_strict(model, state_dict, source=f"checkpoint {Path(path).name}")
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(output))
    return {
        "layout": layout,
        "model": model_name,
        "num_classes": getattr(model, "num_classes", num_classes),
        "tensors": len(state_dict),
        "output": str(output),
    }
