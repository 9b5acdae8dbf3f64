"""Hub-style model folders: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

The folder is timm's own format (``timm.models.save_for_hf``), so the same folder loads with
``timm.create_model("local-dir:DIR", pretrained=True)`` and, once uploaded with ``timm.models.push_to_hf_hub``,
with ``timm.create_model("hf-hub:USER/REPO", pretrained=True)`` (after ``import bridgeattn``).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn
from huggingface_hub import ModelCard, ModelCardData
from timm.models import save_for_hf
from timm.utils import unwrap_model

from ..errors import UserError
from ..files import publish_mode, temp_path
from ..layers.bridge import FusedBridgeAttention
from .loading import load_model, model_preprocessing

__all__ = ["save_pretrained", "from_pretrained", "model_card"]

PAPERS = {  # the BA family's paper, as timm's pretrained_cfg "paper_ids" and in the card
    "bav2": ("arXiv:2410.07860", "BA-Net: Bridge Attention in Deep Neural Networks"),
    "bav1": ("arXiv:2112.04150", "BA-Net: Bridge Attention for Deep Convolutional Neural Networks (ECCV 2022)"),
}
# pretrained_cfg keys that describe where the default weights came from, not the weights being saved
_SOURCE_KEYS = ("tag", "paper_ids", "paper_name", "origin_url", "notes", "license", "url", "hf_hub_id", "file")


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)  # nan and inf print as they are


def _table(rows: Mapping[str, Any]) -> str:
    return "| key | value |\n|---|---|\n" + "".join(f"| {k} | {_format(v)} |\n" for k, v in rows.items())


def model_card(name: str, params: int, preprocessing: Mapping[str, Any], metrics: Mapping[str, Any] | None,
               command: str | None = None, run: Mapping[str, Any] | None = None) -> ModelCard:
    """The README.md of a saved folder (``huggingface_hub.ModelCard``): what the weights are (the run, its data,
    its starting point), the BA paper, the preprocessing they expect, the metrics and the command measuring them."""
    run = dict(run or {})
    paper = PAPERS.get(name.split("_")[0])
    data = ModelCardData(library_name="timm", license="apache-2.0", pipeline_tag="image-classification",
                         tags=["image-classification", "timm", "bridgeattn"])
    origin = f"trained by the run `{run['name']}`" if run.get("name") else "saved by bridgeattn"
    start = f"warm-started from `{run['init_from']}`" if run.get("init_from") else "trained from its own initialisation"
    details = {"Architecture": name, "Params (M)": f"{params / 1e6:.3f}",
               "Image size": "x".join(str(s) for s in preprocessing.get("input_size", ())),
               "Data": run.get("data"), "Initialised from": run.get("init_from"),
               "Paper": f"{paper[1]} ({paper[0]})" if paper else None}
    text = (f"---\n{data.to_yaml()}\n---\n# Model card for {name}\n\nA `{name}` model {origin} ({start}; "
            "Bridge Attention for PyTorch and timm).\n\n## Model Details\n\n"
            + _table({k: v for k, v in details.items() if v})
            + "\n## Model Usage\n\n```python\nimport bridgeattn, timm\n\n"
            "loaded = bridgeattn.load_model(\"path/to/this/folder\")  # .model, .preprocessing\n"
            "# or with timm alone, after `import bridgeattn`:\n"
            "model = timm.create_model(\"local-dir:path/to/this/folder\", pretrained=True).eval()\n"
            "transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))\n```\n"
            "\n## Preprocessing\n\n" + _table(preprocessing))
    if metrics:
        text += "\n## Metrics\n\n" + _table(metrics)
    if command:
        text += f"\nMeasured again by:\n\n```\n{command}\n```\n"
    return ModelCard(text)


def _provenance(model: nn.Module, run: Mapping[str, Any]) -> dict[str, Any]:
    """``model.pretrained_cfg`` describing the weights being saved: the default cfg's source (e.g. the timm
    weights a warm-start tag names) is dropped; the tag is the run's name, the papers the BA family's."""
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _SOURCE_KEYS}
    paper = PAPERS.get(cfg["architecture"].split("_")[0])
    if paper:
        cfg["paper_ids"] = paper[0]
    if run.get("name"):
        cfg["tag"] = str(run["name"])
    return cfg


def save_pretrained(model: nn.Module, directory: str | Path, metrics: Mapping[str, Any] | None = None,
                    model_args: Mapping[str, Any] | None = None, command: str | None = None,
                    run: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (DDP and EMA wrappers unwrapped) as a hub-style folder, its preprocessing in ``config.json``;
    a failure (a full disk) leaves nothing behind. ``metrics`` (``{"top1": 91.2}``) go to the card and
    ``config.json``; ``model_args`` add to the arguments timm records; ``command`` (what measured the metrics) is
    quoted in the card; ``run``: ``name`` (recorded as the tag), ``data``, ``init_from`` (a warm start's weights)."""
    model, run = unwrap_model(model), dict(run or {})
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "architecture" not in cfg or not hasattr(model, "num_classes"):
        raise UserError("save_pretrained needs a classification model from bridgeattn.create_model (not a "
                        "features_only or hand-built module)")
    if any(isinstance(m, FusedBridgeAttention) for m in model.modules()):
        raise UserError("this model has fused bridge gates (inference only); save it before calling fuse()")
    metrics, directory = dict(metrics or {}), Path(directory)
    preprocessing = model_preprocessing(model).to_dict()
    model_config = {"metrics": metrics, "data": run.get("data"), "init_from": run.get("init_from"), "command": command}
    model_config = {k: v for k, v in model_config.items() if v}
    saved_cfg, model.pretrained_cfg = model.pretrained_cfg, _provenance(model, run)
    tmp = temp_path(directory.resolve())
    try:
        save_for_hf(model, str(tmp), model_config=model_config, model_args=dict(model_args or {}),
                    safe_serialization=True, data_config=preprocessing)
        publish_mode(tmp / "model.safetensors")
        params = sum(p.numel() for p in model.parameters())
        model_card(cfg["architecture"], params, preprocessing, metrics, command, run).save(tmp / "README.md")
        if not directory.exists():  # the whole folder appears at once
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, directory)
        for item in tmp.iterdir() if tmp.exists() else []:  # into an existing folder: file by file
            os.replace(item, directory / item.name)
    except (TypeError, ValueError) as exc:  # a construction argument such as a class, a metric such as a tensor
        raise UserError(f"cannot record the model's arguments or metrics as JSON: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot write {directory}: {exc.strerror or exc}") from None
    finally:
        model.pretrained_cfg = saved_cfg
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def from_pretrained(directory: str | Path, **kwargs: Any) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained` in eval mode; another ``num_classes`` re-initialises the
    classifier (fine-tuning), other ``kwargs`` go to ``create_model`` (e.g. ``drop_path_rate``)."""
    if not Path(directory, "config.json").is_file():
        raise UserError(f"{directory} is not a saved model folder (no config.json); create one with save_pretrained")
    num_classes = kwargs.pop("num_classes", None)
    model = load_model(directory, **kwargs).model
    if num_classes is not None and num_classes != model.num_classes:
        model.reset_classifier(num_classes)
    return model
