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

import torch.nn as nn

from ..errors import UserError
from ..layers.bridge import FusedBridgeAttention

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


def model_card_text(name: str, params: int, preprocessing: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                    command: str | None = None) -> str:
    """The README.md of a saved folder: timm's card header and details, the preprocessing the weights expect,
    and the metrics with the command that produced them."""
    family = name.split("_")[0]
    input_size = preprocessing.get("input_size", ())
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
            "```python\nimport bridgeattn, timm\n\n"
            "loaded = bridgeattn.load_model(\"path/to/this/folder\")  # .model, .preprocessing\n"
            "# or with timm alone, after `import bridgeattn`:\n"
            "model = timm.create_model(\"local-dir:path/to/this/folder\", pretrained=True).eval()\n"
            "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n```\n"
        ),
    }
    text = _card_markdown(card, name)
    text += "\n## Preprocessing\n\n| key | value |\n|---|---|\n"
    text += "".join(f"| {k} | {_format(v)} |\n" for k, v in preprocessing.items())
    if metrics:
        text += "\n## Metrics\n\n| metric | value |\n|---|---|\n"
        text += "".join(f"| {k} | {_format(v)} |\n" for k, v in metrics.items())
    if command:
        text += f"\nMeasured again by:\n\n```\n{command}\n```\n"
    return text


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    metrics: Mapping[str, Any] | None = None,
    model_args: Mapping[str, Any] | None = None,
    command: str | None = None,
) -> Path:
    """Write ``model`` as a hub-style folder and return its path.

    Args:
        model: a model from ``bridgeattn.create_model`` or ``bridgeattn.load_model`` (wrappers such as DDP or
            EMA are unwrapped). Its ``pretrained_cfg`` preprocessing (input size, mean, std, interpolation,
            crop) goes to ``config.json``, so timm's ``resolve_data_config`` gives the transform it expects.
        directory: the folder (created if needed; existing files of the same names are replaced).
        metrics: optional results (e.g. ``{"top1": 91.2, "dataset": "fashion-mnist"}``) for the model card
            and ``config.json``.
        model_args: construction arguments to record in addition to those timm recorded (``num_classes``,
            ``in_chans`` and the keyword arguments given to ``create_model`` are recorded already).
        command: the command that produced the weights and metrics, quoted in the model card.
    """
    from timm.models import save_for_hf

    from ..files import publish_mode
    from .loading import model_preprocessing

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
    preprocessing = model_preprocessing(model).to_dict()
    model_config: dict[str, Any] = {"metrics": metrics} if metrics else {}
    if command:
        model_config["command"] = command
    try:
        save_for_hf(model, str(directory), model_config=model_config or None, model_args=dict(model_args or {}),
                    safe_serialization=True, data_config=preprocessing)
    except ValueError as exc:  # e.g. a non-serialisable construction argument such as a class
        raise UserError(f"cannot record the model's arguments: {exc}") from None
    publish_mode(directory / "model.safetensors")
    name = model.pretrained_cfg["architecture"]
    params = sum(p.numel() for p in model.parameters())
    (directory / "README.md").write_text(model_card_text(name, params, preprocessing, metrics, command),
                                         encoding="utf-8")
    return directory


def from_pretrained(directory: str | Path, **kwargs: Any) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` (strict load of ``model.safetensors``), in eval mode.

    ``num_classes=N`` different from the saved head re-initialises the classifier for fine-tuning; other
    ``kwargs`` are construction arguments for ``create_model`` (e.g. ``drop_path_rate``).
    """
    from .loading import load_model

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise UserError(f"{directory} is not a saved model folder (no config.json); create one with save_pretrained")
    num_classes = kwargs.pop("num_classes", None)
    model = load_model(directory, **kwargs).model
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model
