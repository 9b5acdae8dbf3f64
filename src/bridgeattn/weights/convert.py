"""Reference BA-Net checkpoints: their key layouts renamed to this package's.

Stem, stages and head already share torchvision's names with timm's ResNet; only the keys of each block's bridge
gate differ (``_RENAMES``; docs/interop.md tables the layouts).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import UserError, preview_keys
from .safe_load import load_state_dict_strict, state_dict_from

__all__ = ["convert_official_state_dict", "detect_layout", "load_state_dict_strict"]

_BA = re.compile(r"^(?P<block>(?:.+\.)?ba)\.(?P<rest>.+)$")


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


# (pattern, replacement) of the key after ``ba.``; ``{last}`` is the index of BAv1's last tap
_RENAMES = {
    "v2": ((r"fusions\.(\d+)\.0\.weight", r"integration.\1.weight"), (r"proj\.(weight|bias)", r"selection.\1"),
           (r"generation\.0\.(\w+)", r"norm.\1"), (r"generation\.2\.weight", "generation.weight")),
    "v1": ((r"(?:pre_fusions|fusions)\.(\d+)\.0\.weight", r"integration.\1.weight"),
           (r"(?:pre_fusions|fusions)\.(\d+)\.1\.(\w+)", r"integration_norm.\1.\2"),
           (r"cur_fusion\.0\.weight", "integration.{last}.weight"),
           (r"cur_fusion\.1\.(\w+)", r"integration_norm.{last}.\1"), (r"generation\.1\.weight", "generation.weight")),
}


def _rename(key: str, version: str, pre_taps: Mapping[str, int]) -> str | None:
    """``key`` with this package's name (``None`` for an unknown gate key); keys outside the gates stay."""
    match = _BA.match(key)
    if match is None:
        return key
    last_tap = str(pre_taps.get(match.group("block"), 0))
    for pattern, replacement in _RENAMES[version]:
        if rest := re.fullmatch(pattern, match.group("rest")):
            return f"{match.group('block')}.{rest.expand(replacement.replace('{last}', last_tap))}"
    return None


def convert_official_state_dict(obj: Any, version: str) -> dict[str, torch.Tensor]:
    """A reference BA-Net checkpoint (what ``torch.load`` gives, or a bare state dict) with this package's keys,
    for ``bav1_*`` / ``bav2_*`` ResNets; ours pass through. ``version``: ``"bav1"``/``"v1"``, ``"bav2"``/``"v2"``
    or ``"auto"`` (from the keys). Load it with :func:`load_state_dict_strict` to name keys that do not fit."""
    asked = str(version).lower().removeprefix("ba")
    if asked not in ("v1", "v2", "auto"):
        raise UserError(f"version must be 'bav1', 'bav2' or 'auto', got {version!r}")
    state_dict = state_dict_from(obj)
    layout = detect_layout(state_dict)
    found = "v2" if layout == "bav2" else "v1" if layout.startswith("bav1") else None
    if asked != "auto" and found is not None and found != asked:
        raise UserError(f"the checkpoint has the BA{found} layout ({layout} keys) but BA{asked} was asked; "
                        f"use --from ba{found} and a ba{found}_* model")
    if layout == "ours":
        return state_dict

    # BAv1's 'cur_fusion' is the last tap: its index is the number of 'pre_fusions' of the same block.
    pre_taps: dict[str, int] = {}
    for key in state_dict:
        if (m := _BA.match(key)) and (t := re.match(r"pre_fusions\.(\d+)\.", m.group("rest"))):
            pre_taps[m.group("block")] = max(pre_taps.get(m.group("block"), 0), int(t.group(1)) + 1)

    renamed = {key: _rename(key, found, pre_taps) for key in state_dict}
    unknown = [key for key, new in renamed.items() if new is None]
    if unknown:
        raise UserError(f"unrecognised bridge-attention keys for the {layout} layout: {preview_keys(unknown)}")
    return {renamed[key]: value for key, value in state_dict.items()}
