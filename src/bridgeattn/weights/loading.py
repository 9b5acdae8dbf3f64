"""Any weights location -> (model, preprocessing, training config): :func:`load_model`, the one resolver.

docs/interop.md tables the locations it takes and what each gives. Files are read as safe_load.py reads them;
nothing stored in a file starts a download. The model's ``pretrained_cfg`` carries its preprocessing, so timm's
``resolve_data_config(model=model)`` and every export see it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import timm
import torch
import torch.nn as nn
from huggingface_hub import constants, is_offline_mode

from ..config import OPTIONS, REMOTE_KWARGS, TrainConfig, make_config
from ..data.preprocessing import Preprocessing, eval_preprocessing
from ..errors import UserError, first_line
from ..models.registry import create_model
from . import checkpoint as ckpt
from .convert import convert_official_state_dict, detect_layout
from .safe_load import load_file, load_state_dict_strict, safetensors_metadata, state_dict_from

__all__ = ["LoadedModel", "REMOTE_KWARGS", "build_model", "load_model", "model_preprocessing", "resolve_location",
           "set_preprocessing"]

log = logging.getLogger(__name__)

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class LoadedModel:
    """A model rebuilt from saved weights (in eval mode, on the CPU) and what was stored with it; with
    ``load_model(..., build=False)`` the weights alone (``state``, ``kind``, ``source``, ``layout``)."""

    model: nn.Module | None
    name: str | None
    preprocessing: Preprocessing | None
    kind: str  # "run", "checkpoint", "hub", "weights", "reference", "timm"; build=False: resolve_location's kind
    source: Path  # the file the weights came from
    config: dict[str, Any] | None = None  # the training config stored with the weights
    checkpoint: dict[str, Any] = field(default_factory=dict)  # training state besides weights: epoch, history, ...
    metrics: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None
    state: dict[str, torch.Tensor] | None = None  # the weights, when not built into ``model``
    layout: str | None = None  # the reference BA-Net layout whose keys were renamed (convert.py)

    @property
    def train_config(self) -> TrainConfig | None:
        """The training run's settings as a ``TrainConfig`` (``None`` for plain weights)."""
        return None if self.config is None else stored_train_config(self.config)


def resolve_location(location: str | Path) -> tuple[Path, str]:
    """The weights file ``location`` stands for, and its kind: ``"run"``, ``"hub"``, ``"file"`` or ``"timm"``
    (a timm name with weights, when no such file or folder exists; the path is the name)."""
    path = Path(location).expanduser()
    if isinstance(location, str) and not path.exists() and timm.is_model(location):
        if timm.is_model_pretrained(location):  # a url, file or hub id registered for the name (and its tag)
            return Path(location), "timm"
        raise UserError(f"{location}: no such file or folder, and timm has no weights for it")
    if path.is_dir():
        run_dir = path.parent if path.name == ckpt.CKPT_DIR else path
        if (run_dir / ckpt.CKPT_DIR).is_dir():
            return ckpt.run_checkpoint(run_dir), "run"
        if (path / "config.json").is_file():
            for name in HUB_WEIGHTS:
                if (path / name).is_file():
                    return path / name, "hub"
            raise UserError(f"{path} has a config.json but no {' or '.join(HUB_WEIGHTS)}")
        raise UserError(f"{path} is neither a run folder (with checkpoints/) nor a saved model folder "
                        "(config.json + model.safetensors)")
    if not path.is_file():
        raise UserError(f"no such file, folder or timm model with weights: {path}")
    return path, "file"


OFFLINE_HINT = ("offline, set HF_HUB_OFFLINE=1 to use the hub cache, or pass the weights file instead "
                "(timm: pretrained_cfg_overlay=dict(file=PATH))")


def timm_weights(name: str) -> nn.Module:
    """``timm.create_model(name, pretrained=True)``; an unreachable hub is a ``UserError`` within seconds (the hub
    client retries for about a minute) that names the offline form."""
    proxied = any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    if not is_offline_mode() and not proxied:  # behind a proxy, only the proxy knows whether the hub answers
        url = urlsplit(constants.ENDPOINT)
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=3.0).close()
        except OSError:
            raise UserError(f"{name}: the Hugging Face hub cannot be reached to download timm's weights; "
                            f"{OFFLINE_HINT}") from None
    try:
        return timm.create_model(name, pretrained=True)
    except (OSError, RuntimeError) as exc:  # ConnectionError is an OSError
        raise UserError(f"{name}: timm's weights could not be loaded ({first_line(exc)}); {OFFLINE_HINT}") from None


def build_model(name: Any, kwargs: Mapping[str, Any], source: str = "the weights") -> nn.Module:
    """``create_model(name, **kwargs)`` for stored settings: a registered name only, never ``pretrained``,
    and without the arguments in :data:`REMOTE_KWARGS` (logged when dropped)."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{source} does not say which model it holds; pass --model NAME")
    if dropped := sorted(k for k in kwargs if k in REMOTE_KWARGS):
        log.warning("ignoring %s stored with %s: loading saved weights never downloads", ", ".join(dropped), source)
    kwargs = {k: v for k, v in kwargs.items() if k not in REMOTE_KWARGS}
    try:
        return create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise UserError(f"{name} does not accept the arguments {kwargs} from {source}: {exc}") from None


def set_preprocessing(model: nn.Module, preprocessing: Preprocessing) -> nn.Module:
    """Record ``preprocessing`` in ``model.pretrained_cfg`` (a copy), where timm and the exports look for it."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    if tuple(cfg.get("input_size", ())[1:]) != tuple(preprocessing.input_size[1:]):
        cfg["pool_size"] = None  # the default's final feature size no longer holds (informational in timm)
    cfg.update({k: tuple(v) if isinstance(v, list) else v for k, v in preprocessing.to_dict().items()})
    model.pretrained_cfg = cfg
    return model


def model_preprocessing(model: nn.Module) -> Preprocessing:
    """The preprocessing recorded in ``model.pretrained_cfg``, for the model's input channels."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return Preprocessing.from_dict(cfg, in_chans=getattr(model, "in_chans", None))


def stored_train_config(config: Mapping[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint stores (its flat keys; keys this version does not know are left out)."""
    return make_config({k: v for k, v in config.items() if k in OPTIONS})


def shapes_from_weights(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``num_classes`` and ``in_chans`` read off the tensors ``pretrained_cfg`` names as classifier and first conv."""
    cfg = timm.get_pretrained_cfg(name)  # None for a name timm does not know
    if cfg is None:
        return {}
    names = [v[0] if isinstance(v, (tuple, list)) else v for v in (cfg.classifier, cfg.first_conv)]
    head, stem = (state.get(f"{key}.weight") for key in names)  # None for a model without either
    found: dict[str, int] = {}
    if head is not None and head.dim() >= 2:
        found["num_classes"] = int(head.shape[0])
    if stem is not None and stem.dim() == 4:
        found["in_chans"] = int(stem.shape[1])
    return found


def match_dtype(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """float64 weights give a float64 model: nothing is rounded (float32 otherwise, as created)."""
    if {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float64}:
        model.to(dtype=torch.float64)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def load_model(location: str | Path, model_name: str | None = None, *, use_ema: bool = False, unsafe: bool = False,
               build: bool = True, reference: str | None = None, **overrides: Any) -> LoadedModel:
    """Rebuild the model saved at ``location`` (docs/interop.md) in eval mode; ``UserError`` (one line) otherwise.

    ``model_name``: for files that do not name their model (must agree with one that does). ``use_ema``: a
    checkpoint's EMA weights. ``overrides``: construction arguments over the stored ones (e.g. ``drop_path_rate``).
    ``build=False``: the weights alone (``.state``), for a warm start. ``reference`` (``"bav1"``, ``"bav2"``,
    ``"auto"``): the weights must be a BA-Net checkpoint of that layout (``convert``)."""
    file, kind = resolve_location(location)
    if kind == "timm":
        model = timm_weights(str(location)).eval()
        name = model.pretrained_cfg["architecture"]
        if not build:
            return LoadedModel(None, name, None, "timm", file, state=dict(model.state_dict()))
        return LoadedModel(model, name, model_preprocessing(model), "timm", file)
    # run_checkpoint verified a run's file against its record as it picked it; ckpt.read verifies any other file
    obj = load_file(file, unsafe=unsafe) if kind == "run" else ckpt.read(file, unsafe=unsafe)
    state = state_dict_from(obj, use_ema=use_ema, source=str(file))
    layout = "ours"
    with contextlib.suppress(UserError):  # no bridge keys: nothing to rename (refused if a reference was asked for)
        layout = detect_layout(state)
    if layout != "ours" or reference:  # a reference version asked for is checked either way
        state = convert_official_state_dict(state, reference or "auto")
    layout = None if layout == "ours" else layout  # the reference layout whose keys were renamed
    if not build:  # the weights alone: nothing else in the file is read
        return LoadedModel(None, None, None, kind, file, state=state, layout=layout)
    training = isinstance(obj, dict) and isinstance(obj.get("config"), dict) and isinstance(obj.get("model"), Mapping)
    about = _describe_training(obj, file, kind) if training else _describe_weights(obj, file, kind, layout)
    if model_name and isinstance(about.name, str) and about.name and model_name != about.name:
        where = file.parent if about.kind == "hub" else file
        raise UserError(f"{where} holds a {about.name} model, not {model_name}; leave --model out or pass {about.name}")
    name = about.name or model_name
    kwargs = {**(shapes_from_weights(name, state) if isinstance(name, str) else {}), **about.kwargs, **overrides}
    model = build_model(name, kwargs, source=str(about.source))
    match_dtype(model, state)
    load_state_dict_strict(model, state, source=f"checkpoint {file.name}")
    prep = about.preprocessing or model_preprocessing(model)  # recorded with the weights, else the model's defaults
    if isinstance(prep, Mapping):
        prep = Preprocessing.from_dict(prep, in_chans=getattr(model, "in_chans", None))
    labels = list(about.labels) if isinstance(about.labels, (list, tuple)) and about.labels else None
    return LoadedModel(set_preprocessing(model, prep).eval(), name, prep, about.kind, file, about.config,
                       about.extras, about.metrics, labels, layout=layout)


@dataclass
class _Description:
    """What a weights file says about its model: name, construction arguments, preprocessing, records."""

    name: str | None
    kwargs: dict[str, Any]
    preprocessing: Preprocessing | Mapping[str, Any] | None
    kind: str  # LoadedModel.kind
    source: Path  # the file that names the model (a hub folder's config.json)
    config: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    labels: Any = None


def _describe_training(obj: dict[str, Any], file: Path, kind: str) -> _Description:
    """A training checkpoint: its stored config names the model and the data; its history holds the metrics."""
    config = dict(obj["config"])
    if not isinstance(config.get("model"), str):
        raise UserError(f"{file}: its stored config does not name a model; pass --model NAME")
    cfg = stored_train_config(config)
    kwargs = {k: obj[k] for k in ("num_classes", "in_chans") if isinstance(obj.get(k), int)}
    kwargs.update(cfg.model.kwargs)
    prep: Preprocessing | Mapping[str, Any] | None = None
    if isinstance(obj.get("preprocessing"), Mapping):  # recorded at training time
        prep = obj["preprocessing"]
    elif config.get("data"):  # older checkpoints: what the stored data settings imply
        try:
            prep = eval_preprocessing(cfg.data)
        except UserError:
            log.warning("%s does not record its preprocessing; using the model's defaults", file)
    extras = {k: v for k, v in obj.items() if k not in ("model", "ema", "optimizer", "scheduler", "scaler", "rng")}
    last = (obj.get("history") or [{}])[-1]
    metrics = {k: last[k] for k in ("top1", "top5", "loss", "ema_top1", "val_samples") if k in last}
    if metrics:  # where the numbers come from: the validation at the end of the stored epoch
        metrics.update(epoch=obj.get("epoch"), data=cfg.data.spec)
    return _Description(cfg.model.name, kwargs, prep, "run" if kind == "run" else "checkpoint", file, config, extras,
                        metrics, obj.get("class_names"))


def _describe_weights(obj: Any, file: Path, kind: str, layout: str | None) -> _Description:
    """A bare state dict, described by a hub folder's config.json or a safetensors file's metadata (export,
    convert); a timm ``train.py`` checkpoint names its model in ``arch``."""
    if kind == "hub":
        source = file.parent / "config.json"
        try:
            meta = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{source} is not readable JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise UserError(f"{source} is not a model config (expected a JSON object)")
        meta["preprocessing"] = meta.get("pretrained_cfg")
    else:
        source, meta, kind = file, safetensors_metadata(file), "reference" if layout else "weights"
        if not layout and isinstance(obj, dict) and isinstance(obj.get("arch"), str):
            meta.setdefault("architecture", obj["arch"])
    kwargs = {"num_classes": meta["num_classes"]} if isinstance(meta.get("num_classes"), int) else {}
    kwargs.update(_dict(meta.get("model_args")))
    return _Description(meta.get("architecture"), kwargs, _dict(meta.get("preprocessing")) or None, kind, source,
                        metrics=_dict(meta.get("metrics")), labels=meta.get("label_names"))
