"""Hub-style model folders: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

The folder is timm's own format (``timm.models.save_for_hf``), so the same folder loads with
``timm.create_model("local-dir:DIR", pretrained=True)`` and, once uploaded with ``timm.models.push_to_hf_hub``,
with ``timm.create_model("hf-hub:USER/REPO", pretrained=True)`` (after ``import bridgeattn``).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn

from .bridge import FusedBridgeAttention
from .errors import UserError

__all__ = ["save_pretrained", "from_pretrained", "model_card_text"]

PAPERS = {
    "bav2": "BA-Net: Bridge Attention in Deep Neural Networks (arXiv 2410.07860)",
    "bav1": "BA-Net: Bridge Attention for Deep Convolutional Neural Networks (ECCV 2022, arXiv 2112.04150)",
}


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / EMA wrappers."""
    while not hasattr(model, "pretrained_cfg") and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _card_markdown(card: Mapping[str, Any], name: str) -> str:
    """A hub model card in timm's layout (YAML header, details, usage); timm's own writer is private."""
    text = "---\ntags:\n" + "".join(f"- {t}\n" for t in card["tags"])
    text += "pipeline_tag: image-classification\nlibrary_name: timm\nlicense: apache-2.0\n---\n"
    text += f"# Model card for {name}\n\n{card['description']}\n\n## Model Details\n"
    for key, value in card["details"].items():
        if isinstance(value, (list, tuple)):
            text += f"- **{key}:**\n" + "".join(f"  - {v}\n" for v in value)
        else:
            text += f"- **{key}:** {value}\n"
    return text + f"\n## Model Usage\n{card['usage']}\n"


def model_card_text(name: str, params: int, input_size: tuple[int, ...], metrics: Mapping[str, Any] | None) -> str:
    """The README.md of a saved folder: timm's card header and details, plus a metrics table."""
    family = name.split("_")[0]
    details: dict[str, Any] = {
        "Model Type": "Image classification / feature backbone",
        "Architecture": name,
        "Params (M)": f"{params / 1e6:.3f}",
        "Image size": "x".join(str(s) for s in input_size),
    }
    if family in PAPERS:
        details["Papers"] = [PAPERS[family]]
    card = {
        "tags": ["image-classification", "timm", "bridgeattn"],
        "description": f"A `{name}` model saved by bridgeattn (Bridge Attention for PyTorch and timm).",
        "details": details,
        "usage": (
            "```python\nimport bridgeattn\n\nmodel = bridgeattn.from_pretrained(\"path/to/this/folder\").eval()\n"
            "# or, from the Hugging Face hub after `import bridgeattn`:\n"
            "# model = timm.create_model(\"hf-hub:USER/REPO\", pretrained=True)\n```\n"
        ),
    }
    text = _card_markdown(card, name)
    if metrics:
        text += "\n## Metrics\n\n| metric | value |\n|---|---|\n"
        text += "".join(f"| {k} | {_format(v)} |\n" for k, v in metrics.items())
    return text


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    metrics: Mapping[str, Any] | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a hub-style folder and return its path.

    Args:
        model: a model from ``bridgeattn.create_model`` (wrappers such as DDP or EMA are unwrapped).
        directory: the folder (created if needed; existing files of the same names are replaced).
        metrics: optional results (e.g. ``{"top1": 91.2, "dataset": "fashion-mnist"}``) for the model card
            and ``config.json``.
        model_args: construction arguments to record in addition to those timm recorded (``num_classes``,
            ``in_chans`` and the keyword arguments given to ``create_model`` are recorded already).
    """
    from timm.models import save_for_hf

    model = _unwrap(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "architecture" not in cfg or not hasattr(model, "num_classes"):
        raise UserError("save_pretrained needs a classification model from bridgeattn.create_model (not a "
                        "features_only or hand-built module)")
    if any(isinstance(m, FusedBridgeAttention) for m in model.modules()):
        raise UserError("this model has fused bridge gates (inference only); save it before calling fuse()")
    metrics = dict(metrics or {})
    try:
        json.dumps(metrics)
    except TypeError as exc:
        raise UserError(f"metrics must be JSON-serialisable numbers and strings ({exc})") from None
    directory = Path(directory)
    model_config = {"metrics": metrics} if metrics else None
    try:
        save_for_hf(model, str(directory), model_config=model_config, model_args=dict(model_args or {}),
                    safe_serialization=True)
    except ValueError as exc:  # e.g. a non-serialisable construction argument such as a class
        raise UserError(f"cannot record the model's arguments: {exc}") from None
    name = model.pretrained_cfg["architecture"]
    params = sum(p.numel() for p in model.parameters())
    input_size = tuple(json.loads((directory / "config.json").read_text())["pretrained_cfg"]["input_size"])
    (directory / "README.md").write_text(model_card_text(name, params, input_size, metrics), encoding="utf-8")
    return directory


def from_pretrained(directory: str | Path, **kwargs: Any) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` (strict load of ``model.safetensors``).

    ``kwargs`` go to ``timm.create_model`` (e.g. ``num_classes=5`` re-initialises the classifier for fine-tuning).
    """
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserError(f"{directory} is not a saved model folder (no config.json); create one with save_pretrained")
    if not (directory / "model.safetensors").is_file():
        raise UserError(f"{directory} has no model.safetensors")
    architecture = json.loads(config_file.read_text()).get("architecture")
    if not architecture or not timm.is_model(architecture):
        raise UserError(f"{config_file} names an unknown model {architecture!r}")
    return timm.create_model(f"local-dir:{directory}", pretrained=True, **kwargs)
