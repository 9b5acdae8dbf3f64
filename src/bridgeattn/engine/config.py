"""``TrainConfig``: every training option in one dataclass, loaded from YAML recipes and timm-like flags.

Precedence, lowest first: the dataclass defaults, the run folder's stored ``config.yaml`` (when resuming),
the ``--config`` recipe (a name under ``bridgeattn/configs`` or a file), then the flags given on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
AMP_DTYPES = ("auto", "float16", "bfloat16")


@dataclass
class TrainConfig:
    """A training run. ``batch_size`` is per process; the global batch is ``batch_size * grad_accum * world``."""

    # model
    model: str = "bav2_resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # data: the DataConfig fields (``data`` is DataConfig.spec, ``strict_data`` is DataConfig.strict)
    data: str = "fashion-mnist"
    img_size: int | None = None
    in_chans: int | None = None
    recipe: str = "light"
    auto_augment: str | None = None
    color_jitter: float = 0.4
    reprob: float = 0.0
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    train_subset: int | None = None
    val_subset: int | None = None
    strict_data: bool = False
    download: bool = True
    workers: int = 2
    # optimisation
    epochs: int = 10
    batch_size: int = 128
    val_batch_size: int | None = None
    grad_accum: int = 1
    opt: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    opt_eps: float | None = None
    opt_betas: list[float] | None = None
    weight_decay: float = 0.05
    filter_bias_and_bn: bool = True  # no weight decay on 1-D params (norms) and biases
    sched: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    clip_grad: float | None = None
    # regularisation
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    smoothing: float = 0.0
    ema: bool = False
    ema_decay: float = 0.9998
    # numerics and devices
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "auto"  # auto: float16 on CUDA (with a grad scaler), bfloat16 on CPUs that have it natively
    channels_last: bool = False
    sync_bn: bool = False
    freeze_bn: bool = False  # fixed BatchNorm statistics (BatchNorm2d and the gate's BatchNorm1d): fine-tuning
    deterministic: bool = False
    seed: int = 42
    # run folder and reliability
    output: str | None = None  # None: runs/<model>-<date>-<time>
    resume: str | None = None  # "auto" (latest good checkpoint in output, if any) or a checkpoint path
    keep: int = 0  # epoch checkpoints kept besides the last and the best
    skip_nonfinite: int = 0
    unsafe_load: bool = False
    tensorboard: bool = False
    plots: bool = True
    progress: bool = True
    # launcher (command line only; ignored inside the training processes)
    nproc: int = 1
    max_restarts: int = 0

    def data_config(self):  # -> bridgeattn.data.DataConfig
        """The DataConfig this run asks for."""
        from ..data import DataConfig

        rename = {"spec": "data", "strict": "strict_data"}
        values = {f.name: getattr(self, rename.get(f.name, f.name)) for f in dataclasses.fields(DataConfig)
                  if hasattr(self, rename.get(f.name, f.name))}
        return DataConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Raise ``UserError`` for values out of range and for contradictory options; returns self."""
        _positive(self, "epochs", "batch_size", "grad_accum", "nproc")
        _non_negative(self, "workers", "keep", "skip_nonfinite", "max_restarts", "warmup_epochs", "mixup", "cutmix",
                      "smoothing", "weight_decay", "min_lr", "warmup_lr")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.val_batch_size is not None and self.val_batch_size < 1:
            raise UserError(f"--val-batch-size must be positive, got {self.val_batch_size}")
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise UserError(f"--warmup-epochs ({self.warmup_epochs}) must be smaller than --epochs ({self.epochs})")
        if self.clip_grad is not None and not self.clip_grad >= 0:
            raise UserError(f"--clip-grad must be a positive gradient norm (or none: off), got {self.clip_grad}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.smoothing < 1:
            raise UserError(f"--smoothing must be in [0, 1), got {self.smoothing}")
        if self.sched not in SCHEDULERS:
            raise UserError(f"unknown --sched {self.sched!r}; use one of: {', '.join(SCHEDULERS)}")
        if self.amp_dtype not in AMP_DTYPES:
            raise UserError(f"unknown --amp-dtype {self.amp_dtype!r}; use one of: {', '.join(AMP_DTYPES)}")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UserError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.device == "cpu" and self.sync_bn:
            raise UserError("--sync-bn needs CUDA devices; drop --sync-bn or use --device cuda")
        if self.sync_bn and self.freeze_bn:
            raise UserError("--sync-bn and --freeze-bn contradict each other: frozen BatchNorm has nothing to sync")
        if self.device == "cpu" and self.amp and self.amp_dtype == "float16":
            raise UserError("--amp-dtype float16 needs CUDA; on CPU use --amp-dtype bfloat16 (or auto)")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise UserError(f"Mixup/CutMix mix pairs within a batch: --batch-size must be even, got {self.batch_size}")
        if self.resume not in (None, "auto") and not Path(self.resume).exists():
            raise UserError(f"--resume {self.resume}: no such checkpoint (use --resume auto to continue the run "
                            "in --output, if any)")
        if self.resume is not None and self.output is None and self.resume == "auto":
            raise UserError("--resume auto needs --output: the run folder to continue")
        if self.nproc > 1 and "LOCAL_RANK" in os.environ:
            raise UserError("--nproc launches torchrun itself; under torchrun leave --nproc out")
        if self.max_restarts and self.nproc == 1 and "LOCAL_RANK" not in os.environ:
            raise UserError("--max-restarts is for torchrun's elastic restarts: use it with --nproc N")
        if not isinstance(self.model_kwargs, dict):
            raise UserError(f"model_kwargs must be a mapping, got {self.model_kwargs!r}")
        return self


def _positive(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")


def _non_negative(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(cfg, name)}")


# ---------------------------------------------------------------------------------------------- YAML and values

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _base_type(hint: Any) -> tuple[type, bool]:
    """``int | None`` -> (int, True); ``list[float]`` -> (list, False)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0])[0], True
    return (origin or hint), False


def coerce(name: str, value: Any) -> Any:
    """Convert a YAML or flag value to the field's type; ``UserError`` when it cannot be."""
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, _FIELDS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown training option {name!r}{hint}")
    kind, optional = _base_type(_HINTS[name])
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise UserError(f"option {name!r} cannot be empty")
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind is float:
            return float(value)
        if kind is str:
            return str(value)
        if kind is list:
            return [float(v) for v in value]
        if kind is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError):
        raise UserError(f"option {name!r}: {value!r} is not a valid {kind.__name__}") from None
    return value


def resolve_config_path(name_or_path: str) -> Path:
    """A recipe name (``cpu_demo``, ``imagenet_bav2.yaml``) or a YAML file path -> the file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"--config {name_or_path}: no such file or built-in recipe (built-in: {known})")


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The options of a YAML config file, checked and converted to the fields' types."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of option: value")
    return {key.replace("-", "_"): coerce(key.replace("-", "_"), value) for key, value in raw.items()}


def dump_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def make_config(*layers: dict[str, Any]) -> TrainConfig:
    """Defaults updated by each mapping in turn (later wins)."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({k: coerce(k, v) for k, v in layer.items()})
    return TrainConfig(**values)


# ----------------------------------------------------------------------------------------------------- flags

def _model_kwargs(text: str) -> dict[str, Any]:
    """``"drop_rate=0.1 rd_ratio=0.125"`` or a YAML/JSON mapping -> dict."""
    text = text.strip()
    if text.startswith("{"):
        value = yaml.safe_load(text)
    else:
        value = {}
        for item in text.replace(",", " ").split():
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
            value[key] = yaml.safe_load(raw)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected key=value pairs, got {text!r}")
    return value


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


# (flag, field, help); type and metavar follow the field's annotation; booleans get --flag/--no-flag.
FLAGS: list[tuple[str, str, str]] = [
    ("--model", "model", "model name (see `bridgeattn models`)"),
    ("--model-kwargs", "model_kwargs", "extra create_model arguments: 'drop_rate=0.1 rd_ratio=0.125'"),
    ("--data", "data", "dataset spec: fashion-mnist | folder:PATH | cifar10:PATH | cifar100:PATH | synthetic[:N]"),
    ("--img-size", "img_size", "input image size (default: the data set's own)"),
    ("--in-chans", "in_chans", "input channels, 1 or 3 (default: the data set's own)"),
    ("--recipe", "recipe", "augmentation recipe: light | imagenet | none"),
    ("--aa", "auto_augment", "timm auto-augment string, e.g. rand-m9-mstd0.5-inc1 (imagenet recipe)"),
    ("--color-jitter", "color_jitter", "color jitter strength (imagenet recipe)"),
    ("--reprob", "reprob", "random erasing probability (imagenet recipe)"),
    ("--interpolation", "interpolation", "resize interpolation"),
    ("--crop-pct", "crop_pct", "eval center-crop fraction"),
    ("--train-subset", "train_subset", "use the first N training samples"),
    ("--val-subset", "val_subset", "use the first N validation samples"),
    ("--strict-data", "strict_data", "stop at the first unreadable image instead of skipping it"),
    ("--download", "download", "allow torchvision's download when local data files are absent"),
    ("--workers", "workers", "data loader worker processes per training process"),
    ("--epochs", "epochs", "number of epochs"),
    ("--batch-size", "batch_size", "batch size per process"),
    ("--val-batch-size", "val_batch_size", "eval batch size per process (default: 2x --batch-size)"),
    ("--grad-accum", "grad_accum", "accumulate gradients over N batches per optimizer step"),
    ("--opt", "opt", "optimizer (timm name: adamw, sgd, lamb, ...)"),
    ("--lr", "lr", "peak learning rate"),
    ("--momentum", "momentum", "SGD momentum"),
    ("--opt-eps", "opt_eps", "optimizer epsilon"),
    ("--opt-betas", "opt_betas", "optimizer betas, e.g. 0.9 0.999"),
    ("--weight-decay", "weight_decay", "weight decay"),
    ("--filter-bias-and-bn", "filter_bias_and_bn", "no weight decay on biases and 1-D params"),
    ("--sched", "sched", "learning rate schedule, stepped per iteration"),
    ("--warmup-epochs", "warmup_epochs", "linear warm-up epochs"),
    ("--warmup-lr", "warmup_lr", "learning rate at the start of warm-up"),
    ("--min-lr", "min_lr", "final learning rate of the cosine schedule"),
    ("--clip-grad", "clip_grad", "clip the gradient norm to this value (none: off)"),
    ("--mixup", "mixup", "Mixup alpha (0: off)"),
    ("--cutmix", "cutmix", "CutMix alpha (0: off)"),
    ("--mixup-prob", "mixup_prob", "probability of mixing a batch"),
    ("--mixup-switch-prob", "mixup_switch_prob", "probability of CutMix instead of Mixup when both are on"),
    ("--mixup-mode", "mixup_mode", "batch | pair | elem"),
    ("--smoothing", "smoothing", "label smoothing"),
    ("--ema", "ema", "keep an exponential moving average of the weights (timm ModelEmaV3)"),
    ("--ema-decay", "ema_decay", "EMA decay"),
    ("--device", "device", "auto | cpu | cuda"),
    ("--amp", "amp", "mixed precision: float16 + grad scaler on CUDA, bfloat16 autocast on CPUs with native bf16"),
    ("--amp-dtype", "amp_dtype", "auto | float16 | bfloat16"),
    ("--channels-last", "channels_last", "channels_last memory format"),
    ("--sync-bn", "sync_bn", "SyncBatchNorm across processes (CUDA only)"),
    ("--freeze-bn", "freeze_bn", "freeze every BatchNorm, the gate's included (fine-tuning with small batches)"),
    ("--deterministic", "deterministic", "deterministic algorithms (bit-exact resume on CPU)"),
    ("--seed", "seed", "seed for model init, data order and augmentation"),
    ("--output", "output", "run folder (default: runs/<model>-<date>-<time>)"),
    ("--resume", "resume", "'auto' (latest good checkpoint in --output) or a checkpoint path"),
    ("--keep", "keep", "epoch checkpoints kept besides the last and the best"),
    ("--skip-nonfinite", "skip_nonfinite", "skip up to N steps with a NaN/Inf loss instead of stopping"),
    ("--unsafe-load", "unsafe_load", "allow checkpoints that need arbitrary code to load (trusted files only)"),
    ("--tensorboard", "tensorboard", "write TensorBoard events (needs the tensorboard package)"),
    ("--plots", "plots", "write curves.png and confusion.png"),
    ("--progress", "progress", "show a progress bar"),
    ("--nproc", "nproc", "processes on this machine: relaunches itself under torchrun"),
    ("--max-restarts", "max_restarts", "torchrun elastic restarts after a failed process (with --nproc)"),
]

_CHOICES = {"sched": SCHEDULERS, "amp_dtype": AMP_DTYPES, "mixup_mode": ("batch", "pair", "elem")}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per TrainConfig field; unset flags stay absent from the namespace."""
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="NAME|FILE",
                        help="recipe name under configs/ (cpu_demo, imagenet_bav2, imagenet_bav1) or a YAML file")
    defaults = TrainConfig()
    for flag, name, help_text in FLAGS:
        kind, optional = _base_type(_HINTS[name])
        default = getattr(defaults, name)
        shown = f"{help_text} (default: {default})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": shown}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            kw.update(type=_model_kwargs, metavar="K=V ...")
        elif kind is list:
            kw.update(type=float, nargs="+", metavar="X")
        else:
            kw["type"] = _optional(kind) if optional else kind
            kw["metavar"] = "N" if kind is int else name.upper().split("_")[-1]
            if name in _CHOICES:
                kw["choices"] = _CHOICES[name]
        parser.add_argument(flag, **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults < stored run config (on resume) < --config file < the flags given; validated."""
    flags = {name: getattr(args, name) for _, name, _ in FLAGS if hasattr(args, name)}
    recipe = load_yaml(resolve_config_path(args.config)) if getattr(args, "config", None) else {}
    stored: dict[str, Any] = {}
    output = flags.get("output", recipe.get("output"))
    if flags.get("resume", recipe.get("resume")) and output and (Path(output) / "config.yaml").is_file():
        stored = load_yaml(Path(output) / "config.yaml")
        # the stored run's launcher, resume and display settings do not carry over
        for key in ("resume", "nproc", "max_restarts", "progress"):
            stored.pop(key, None)
    return make_config(stored, recipe, flags).validate()
