"""Any weights location -> (model, preprocessing, training config): the one way the tools load a model.

``load_model(location)`` accepts, and reads:

- a run folder (``RUN`` or ``RUN/checkpoints``): its newest end-of-epoch checkpoint that matches its
  size/SHA-256 record and holds finite weights, the one ``summary.json`` and the last metrics describe
  (mid-epoch checkpoints of an interrupted run are for ``--resume``). For another epoch pass its file
  (``RUN/checkpoints/best.pth``, ``epoch-0003.pth``).
- a training checkpoint file: checked against its record when it has one; the model name and construction
  arguments come from the config stored in it, the preprocessing from the record training keeps of it (older
  checkpoints: from the stored data settings).
- a hub-style folder (``config.json`` + ``model.safetensors``, from ``save_pretrained``, ``export --format hub``
  or timm's ``save_for_hf``): the architecture, arguments and preprocessing come from ``config.json``.
- a ``.safetensors`` file: the files ``export`` and ``convert`` write name their model, arguments and
  preprocessing in their metadata; for other files give the model name.
- any other weights file: a bare state dict or one wrapped as timm, torchvision and the reference BA-Net scripts
  wrap it (``state_dict``, ``model``, ``state_dict_ema``), with DDP ``module.`` and ``torch.compile``
  ``_orig_mod.`` prefixes removed (timm's ``clean_state_dict``); reference BA-Net bridge keys are renamed
  (see convert.py). Give the model name; the head size and input channels are read off the tensors the model's
  ``pretrained_cfg`` names as ``classifier`` and ``first_conv``. A checkpoint of timm's ``train.py`` names its
  model (``arch``); its ``args`` (an ``argparse.Namespace``) load without running code.
- a timm model name with weights (``resnet50.a1_in1k``): timm's plain weights, downloaded (or from the hub cache
  with ``HF_HUB_OFFLINE=1``); an unreachable hub is one line naming the offline form.

:func:`load_model` builds the model; :func:`load_state` gives the same location's weights as a state dict (for a
warm start, which builds another model). Both resolve a location through ``_open``, the one place that does.

Files are read as safe_load.py reads them (no code runs unless the caller passes ``unsafe``). Nothing stored in
a file starts a download: models are built with ``pretrained=False`` and stored construction arguments that
point at remote weights are dropped. The loaded model's ``pretrained_cfg`` carries its preprocessing, so timm's
``resolve_data_config(model=model)`` and every export see the run's input size and normalisation.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from ..config import TrainConfig
from ..data.preprocessing import Preprocessing, eval_preprocessing
from ..errors import UserError
from ..models.registry import REMOTE_KWARGS, create_model
from . import checkpoint as ckpt
from .convert import convert_official_state_dict, detect_layout
from .safe_load import is_safetensors, load_state_dict_strict, safetensors_metadata, state_dict_from

__all__ = [
    "LoadedModel",
    "REMOTE_KWARGS",
    "build_model",
    "load_model",
    "model_from_state_dict",
    "model_preprocessing",
    "load_state",
    "resolve_location",
    "set_preprocessing",
]

log = logging.getLogger(__name__)

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclass
class LoadedModel:
    """A model rebuilt from saved weights (in eval mode, on the CPU) and what was stored with it."""

    model: nn.Module
    name: str
    model_kwargs: dict[str, Any]  # what create_model got besides the name (num_classes, in_chans, ...)
    preprocessing: Preprocessing
    kind: str  # "run", "checkpoint", "hub", "weights" or "reference"
    source: Path  # the file the weights came from
    config: dict[str, Any] | None = None  # the training config stored with the weights
    checkpoint: dict[str, Any] = field(default_factory=dict)  # training state besides weights: epoch, history, ...
    metrics: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

    @property
    def train_config(self) -> TrainConfig | None:
        """The training run's settings as a ``TrainConfig`` (``None`` for plain weights)."""
        return None if self.config is None else stored_train_config(self.config)


def resolve_location(location: str | Path) -> tuple[Path, str]:
    """The weights file ``location`` stands for, and its kind: ``"run"``, ``"hub"``, ``"file"`` or ``"timm"``
    (a timm name with weights, when no such file or folder exists; the path is the name)."""
    path = Path(location).expanduser()
    if isinstance(location, str) and not path.exists() and timm.is_model(location.split(".", 1)[0]):
        try:
            cfg = timm.get_pretrained_cfg(location)
        except RuntimeError:  # an unknown tag
            cfg = None
        if cfg is not None and (cfg.hf_hub_id or cfg.url or cfg.file):
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


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers within ``timeout`` s (huggingface_hub retries for about a minute)."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # only the proxy knows
    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def timm_weights(name: str) -> nn.Module:
    """``timm.create_model(name, pretrained=True)``; an unreachable hub is a ``UserError`` within seconds (the hub
    client retries for about a minute) that names the offline form."""
    from huggingface_hub import is_offline_mode

    if not is_offline_mode() and not _hub_reachable():
        raise UserError(f"{name}: the Hugging Face hub cannot be reached to download timm's weights; {OFFLINE_HINT}")
    try:
        return timm.create_model(name, pretrained=True)
    except (OSError, ConnectionError, RuntimeError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{name}: timm's weights could not be loaded ({detail}); {OFFLINE_HINT}") from None


def build_model(name: Any, kwargs: Mapping[str, Any], source: str = "the weights") -> nn.Module:
    """``create_model(name, **kwargs)`` for stored settings: a registered name only, never ``pretrained``,
    and without the arguments in :data:`REMOTE_KWARGS` (logged when dropped)."""
    if not isinstance(name, str) or not name:
        raise UserError(f"{source} does not say which model it holds; pass --model NAME")
    dropped = sorted(k for k in kwargs if k in REMOTE_KWARGS)
    if dropped:
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


# ----------------------------------------------------------------------------------------------- stored config
def stored_train_config(config: Mapping[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` a checkpoint stores (its flat keys; keys this version does not know are left out)."""
    from ..config import OPTIONS, make_config

    return make_config({k: v for k, v in config.items() if k in OPTIONS})


# ----------------------------------------------------------------------------------------------- the loaders
def shapes_from_weights(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``num_classes`` and ``in_chans`` read off the tensors the model's pretrained_cfg names as its
    classifier and first conv."""
    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None:
        return {}
    first = lambda v: v[0] if isinstance(v, (tuple, list)) else v  # noqa: E731
    found: dict[str, int] = {}
    head = state.get(f"{first(cfg.classifier)}.weight") if cfg.classifier else None
    if head is not None and head.dim() >= 2:
        found["num_classes"] = int(head.shape[0])
    stem = state.get(f"{first(cfg.first_conv)}.weight") if cfg.first_conv else None
    if stem is not None and stem.dim() == 4:
        found["in_chans"] = int(stem.shape[1])
    return found


def match_dtype(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """float64 weights give a float64 model: nothing is rounded (float32 otherwise, as created)."""
    if {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float64}:
        model.to(dtype=torch.float64)


def _check_name(asked: str | None, stored: Any, source: Path) -> None:
    if asked and isinstance(stored, str) and stored and asked != stored:
        raise UserError(f"{source} holds a {stored} model, not {asked}; leave --model out or pass {stored}")


def _finish(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path, preprocessing: Preprocessing | None,
            ) -> tuple[nn.Module, Preprocessing]:
    match_dtype(model, state)
    load_state_dict_strict(model, state, source=f"checkpoint {source.name}")
    preprocessing = preprocessing or model_preprocessing(model)
    return set_preprocessing(model, preprocessing).eval(), preprocessing


def _load_training(obj: dict[str, Any], file: Path, kind: str, model_name: str | None, use_ema: bool,
                   overrides: dict[str, Any]) -> LoadedModel:
    config = dict(obj["config"])
    if not isinstance(config.get("model"), str):
        raise UserError(f"{file}: its stored config does not name a model; pass --model NAME")
    cfg = stored_train_config(config)
    name, stored_kwargs = cfg.model.name, dict(cfg.model.kwargs)
    _check_name(model_name, name, file)
    state = state_dict_from(obj, use_ema=use_ema, source=str(file))
    shapes = {k: obj[k] for k in ("num_classes", "in_chans") if isinstance(obj.get(k), int)}
    kwargs = {**shapes_from_weights(name, state), **shapes, **stored_kwargs, **overrides}
    model = build_model(name, kwargs, source=str(file))
    preprocessing = None
    if isinstance(obj.get("preprocessing"), Mapping):  # recorded at training time
        preprocessing = Preprocessing.from_dict(obj["preprocessing"])
    elif config.get("data"):  # older checkpoints: what the stored data settings imply
        try:
            preprocessing = eval_preprocessing(cfg.data)
        except UserError:
            log.warning("%s does not record its preprocessing; using the model's defaults", file)
    model, preprocessing = _finish(model, state, file, preprocessing)
    extras = {k: v for k, v in obj.items() if k not in ("model", "ema", "optimizer", "scheduler", "scaler", "rng")}
    last = (obj.get("history") or [{}])[-1]
    metrics = {k: last[k] for k in ("top1", "top5", "loss", "ema_top1", "val_samples") if k in last}
    if metrics:  # where the numbers come from: the validation at the end of the stored epoch
        metrics.update(epoch=obj.get("epoch"), data=cfg.data.spec)
    return LoadedModel(model, name, kwargs, preprocessing, kind, file, config, extras, metrics,
                       list(obj.get("class_names") or []) or None)


def _load_hub(folder: Path, weights: Path, obj: Any, model_name: str | None, use_ema: bool,
              overrides: dict[str, Any]) -> LoadedModel:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}/config.json is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UserError(f"{folder}/config.json is not a model config (expected a JSON object)")
    name = config.get("architecture")
    _check_name(model_name, name, folder)
    pretrained_cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else {}
    kwargs: dict[str, Any] = {}
    if isinstance(config.get("num_classes"), int):
        kwargs["num_classes"] = config["num_classes"]
    kwargs = {**kwargs, **dict(config.get("model_args") or {}), **overrides}
    state = state_dict_from(obj, use_ema=use_ema, source=str(weights))
    model = build_model(name, kwargs, source=str(folder / "config.json"))
    preprocessing = Preprocessing.from_dict(pretrained_cfg, in_chans=getattr(model, "in_chans", None))
    model, preprocessing = _finish(model, state, weights, preprocessing)
    labels = config.get("label_names")
    return LoadedModel(model, name, kwargs, preprocessing, "hub", weights, None, {},
                       dict(config.get("metrics") or {}), list(labels) if isinstance(labels, list) else None)


def _reference_layout(state: Mapping[str, torch.Tensor]) -> str | None:
    try:
        layout = detect_layout(state)
    except UserError:  # no bridge keys at all
        return None
    return None if layout == "ours" else layout


def load_model(
    location: str | Path,
    model_name: str | None = None,
    *,
    use_ema: bool = False,
    unsafe: bool = False,
    **overrides: Any,
) -> LoadedModel:
    """Rebuild the model saved at ``location`` (see the module docstring for what is accepted) in eval mode.

    ``model_name`` is needed only for files that do not name their model; when both are given they must agree.
    ``use_ema`` takes a checkpoint's EMA weights. ``overrides`` are construction arguments that win over the
    stored ones (e.g. ``drop_path_rate``); the weights must still fit. Raises ``UserError`` with one line.
    """
    file, kind, obj = _open(location, unsafe)
    if kind == "timm":
        model = obj.eval()
        return LoadedModel(model, model.pretrained_cfg["architecture"], {}, model_preprocessing(model), "timm", file)
    if kind == "hub":
        return _load_hub(file.parent, file, obj, model_name, use_ema, overrides)
    if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and isinstance(obj.get("model"), Mapping):
        return _load_training(obj, file, "run" if kind == "run" else "checkpoint", model_name, use_ema, overrides)
    meta = safetensors_metadata(file) if is_safetensors(file) else {}
    if isinstance(obj, dict) and isinstance(obj.get("arch"), str):  # timm's train.py (CheckpointSaver)
        meta.setdefault("architecture", obj["arch"])
    return model_from_state_dict(state_dict_from(obj, use_ema=use_ema, source=str(file)), model_name, file, meta,
                                 **overrides)


def _open(location: str | Path, unsafe: bool) -> tuple[Path, str, Any]:
    """The one resolver: ``location`` -> (file, kind, what it holds: a timm name gives its model), the file's
    checksum record checked when it has one."""
    file, kind = resolve_location(location)
    return file, kind, timm_weights(str(location)) if kind == "timm" else ckpt.read(file, unsafe=unsafe)


def load_state(location: str | Path, *, use_ema: bool = False, unsafe: bool = False) -> dict[str, torch.Tensor]:
    """The weights at any location :func:`load_model` takes, as a state dict (reference BA-Net keys renamed),
    without building the model they came from: what a warm start reads."""
    file, kind, obj = _open(location, unsafe)
    if kind == "timm":
        return dict(obj.state_dict())
    state = state_dict_from(obj, use_ema=use_ema, source=str(file))
    return convert_official_state_dict(state, "auto") if _reference_layout(state) else state


def model_from_state_dict(
    state: Mapping[str, torch.Tensor],
    model_name: str | None,
    source: str | Path,
    meta: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> LoadedModel:
    """Build and strictly load a model from a bare state dict (reference BA-Net keys are renamed).

    ``meta``: what the file says about itself (``architecture``, ``model_args``, ``preprocessing``, ``metrics``,
    as :func:`bridgeattn.weights.export.weights_metadata` writes them).
    """
    source, meta = Path(source), dict(meta or {})
    kind = "weights"
    if _reference_layout(state):
        state = convert_official_state_dict(state, "auto")
        kind = "reference"
    stored = meta.get("architecture")
    _check_name(model_name, stored, source)
    name = model_name or stored
    if not name:
        raise UserError(f"{source} does not say which model it holds; pass --model NAME")
    stored_kwargs = meta.get("model_args") if isinstance(meta.get("model_args"), dict) else {}
    kwargs = {**shapes_from_weights(name, state), **stored_kwargs, **overrides}
    model = build_model(name, kwargs, source=str(source))
    preprocessing = None
    if isinstance(meta.get("preprocessing"), dict):
        preprocessing = Preprocessing.from_dict(meta["preprocessing"], in_chans=getattr(model, "in_chans", None))
    model, preprocessing = _finish(model, state, source, preprocessing)
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    return LoadedModel(model, name, kwargs, preprocessing, kind, source, None, {}, dict(metrics))
