"""The training configuration: one tree of dataclasses from which recipe keys and ``bridgeattn train`` flags come.

``TrainConfig`` (sections ``model``, ``data``, ``optim``, ``run``) is what a run's ``config.yaml`` and checkpoints
store; ``LaunchOptions`` belong to one invocation and are never stored. Each field's metadata holds its ``help``,
and optionally its YAML ``key`` and ``flag`` (docs/cli.md). Imports neither torch nor timm."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = ["AMP_DTYPES", "CONFIG_DIR", "LAUNCH_OPTIONS", "MIXUP_MODES", "OPTIONS", "REMOTE_KWARGS", "SCHEDULERS",
           "SECTIONS", "DataConfig", "LaunchOptions", "ModelConfig", "OptimConfig", "Option", "RunConfig",
           "TrainConfig", "add_train_arguments", "config_from_args", "dump_yaml", "flags_given", "from_flat", "listed",
           "load_yaml", "make_config", "model_kwargs_arg", "option", "resolve_config_path"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")
AMP_DTYPES = ("auto", "float16", "bfloat16")
MIXUP_MODES = ("batch", "pair", "elem")


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with its help text (and optional ``key``, ``flag``, ``choices``) in its metadata."""
    return field(default=default, default_factory=factory, metadata={"help": help, **meta})


def listed(convert: Callable[[str], Any] = str) -> type[argparse.Action]:
    """An action for ``nargs="+"`` that also splits on commas: ``--models a,b`` equals ``--models a b``."""

    class Listed(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
            try:  # nargs="+": values is a list of texts
                items = [convert(p.strip()) for text in values or () for p in str(text).split(",") if p.strip()]
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"argument {option_string}: {exc}")
            if not items:
                parser.error(f"argument {option_string}: expected at least one value")
            setattr(namespace, self.dest, items)

    return Listed


@dataclass
class DataConfig:
    """A dataset spec (docs/data.md) plus the options that shape its transforms; ``None``: the data set's own."""

    spec: str = option("fashion-mnist", key="data", help="dataset spec: fashion-mnist | folder:PATH | cifar10:PATH | "
                                                         "cifar100:PATH | wds:DIR_OR_URL | synthetic[:N]")
    img_size: int | None = option(None, help="input image size (default: the data set's own)")
    in_chans: int | None = option(None, help="input channels, 1 or 3 (default: the data set's own)")
    recipe: str = option("light", help="augmentation recipe: light | imagenet | none")
    auto_augment: str | None = option(None, flag="--aa",
                                      help="timm auto-augment string, e.g. rand-m9-mstd0.5-inc1 (imagenet recipe)")
    color_jitter: float = option(0.4, help="color jitter strength (imagenet recipe)")
    reprob: float = option(0.0, help="random erasing probability (imagenet recipe)")
    interpolation: str = option("bicubic", help="resize interpolation")
    crop_pct: float = option(0.875, help="eval center-crop fraction")
    train_subset: int | None = option(None, help="keep N training samples: the first N (N evenly spaced ones in "
                                                 "image folders)")
    val_subset: int | None = option(None, help="keep N validation samples: the first N (N evenly spaced ones in "
                                               "image folders)")
    strict: bool = option(False, key="strict_data", help="stop at the first unreadable image instead of skipping it")
    download: bool = option(True, help="allow torchvision's download when local data files are absent")


@dataclass
class ModelConfig:
    """Which network to build: a registered name and extra ``create_model`` arguments."""

    name: str = option("bav2_resnet20", key="model", help="model name (see `bridgeattn models`)")
    kwargs: dict[str, Any] = option(factory=dict, key="model_kwargs",
                                    help="extra create_model arguments: 'drop_rate=0.1 rd_ratio=0.125'")
    init_from: str | None = option(None, help="start from these weights: a timm name (resnet50.a1_in1k), a weights "
                                   "file or a run folder; plain weights warm-start the gates (docs/warmstart.md)")


@dataclass
class OptimConfig:
    """Optimisation: budget, optimizer, schedule, regularisation. ``batch_size`` is per process."""

    epochs: int = option(10, help="number of epochs")
    batch_size: int = option(128, help="batch size per process")
    val_batch_size: int | None = option(None, help="eval batch size per process (default: 2x --batch-size)")
    grad_accum: int = option(1, help="accumulate gradients over N batches per optimizer step")
    opt: str = option("adamw", help="optimizer (timm name: adamw, sgd, lamb, ...)")
    lr: float = option(1e-3, help="peak learning rate")
    momentum: float = option(0.9, help="SGD momentum")
    opt_eps: float | None = option(None, help="optimizer epsilon")
    opt_betas: list[float] | None = option(None, help="optimizer betas, e.g. 0.9 0.999")
    weight_decay: float = option(0.05, help="weight decay")
    filter_bias_and_bn: bool = option(True, help="no weight decay on biases and 1-D params")
    sched: str = option("cosine", choices=SCHEDULERS, help="learning rate schedule, stepped per iteration")
    warmup_epochs: float = option(0.0, help="linear warm-up epochs")
    warmup_prefix: bool = option(False, help="decay over the epochs after the warm-up (--epochs minus "
                                             "--warmup-epochs), from the peak lr, instead of over all epochs")
    warmup_lr: float = option(1e-6, help="learning rate at the start of warm-up")
    min_lr: float = option(1e-5, help="final learning rate of the cosine schedule")
    clip_grad: float | None = option(None, help="clip the gradient norm to this value (none: off)")
    gate_lr_scale: float = option(1.0, help="learning rate of the gate parameters that plain weights lack, as a "
                                            "multiple of --lr (fine-tuning from --init-from)")
    mixup: float = option(0.0, help="Mixup alpha (0: off)")
    cutmix: float = option(0.0, help="CutMix alpha (0: off)")
    mixup_prob: float = option(1.0, help="probability of mixing a batch")
    mixup_switch_prob: float = option(0.5, help="probability of CutMix instead of Mixup when both are on")
    mixup_mode: str = option("batch", choices=MIXUP_MODES, help="batch | pair | elem")
    smoothing: float = option(0.0, help="label smoothing")
    ema: bool = option(False, help="keep an exponential moving average of the weights (timm ModelEmaV3)")
    ema_decay: float = option(0.9998, help="EMA decay")


@dataclass
class RunConfig:
    """How the run executes: devices, numerics, seed, loader workers, what it records."""

    device: str = option("auto", help="auto | cpu | cuda[:N]; auto: cuda if available, else cpu")
    amp: bool = option(False, help="mixed precision: float16 + grad scaler on CUDA, bfloat16 autocast on CPUs with "
                                   "native bf16")
    amp_dtype: str = option("auto", choices=AMP_DTYPES, help="auto | float16 | bfloat16")
    channels_last: bool = option(False, help="channels_last memory format")
    sync_bn: bool = option(False, help="SyncBatchNorm across processes (CUDA only)")
    freeze_bn: bool = option(False, help="freeze every BatchNorm, the gate's included (fine-tuning with small batches)")
    deterministic: bool = option(False, help="deterministic algorithms (bit-exact resume on CPU)")
    seed: int = option(42, help="seed for model init, data order and augmentation")
    workers: int = option(2, help="data loader worker processes per training process")
    keep: int = option(0, help="epoch checkpoints kept besides the last and the best")
    skip_nonfinite: int = option(0, help="skip up to N steps with a NaN/Inf loss instead of stopping")
    tensorboard: bool = option(False, help="write TensorBoard events (needs the tensorboard package)")
    plots: bool = option(True, help="write curves.png and confusion.png")


@dataclass
class LaunchOptions:
    """One invocation's choices, never stored in a run: where, whether to resume, trust, display, processes."""

    output: str | None = option(None, help="run folder (default: runs/<model>-<date>-<time>)")
    resume: str | None = option(None, const="auto", help="'auto' (latest good checkpoint in --output; also plain "
                                "--resume) or a checkpoint path")
    overwrite: bool = option(False, help="use an --output folder that holds other files, not a run (the run's "
                                         "files replace any of the same name)")
    unsafe_load: bool = option(False, help="allow checkpoints that need arbitrary code to load (trusted files only)")
    progress: bool = option(True, help="show a progress bar")
    nproc: int = option(1, help="processes on this machine: relaunches itself under torchrun")
    max_restarts: int = option(0, help="torchrun elastic restarts after a failed process (with --nproc)")

    def validate(self) -> LaunchOptions:
        """Raise ``UserError`` for impossible launch options; returns self."""
        _require(lambda v: v >= 1, "must be at least 1", nproc=self.nproc)
        _require(lambda v: v >= 0, "must not be negative", max_restarts=self.max_restarts)
        if self.resume not in (None, "auto") and not Path(self.resume).exists():
            raise UserError(f"--resume {self.resume}: no such checkpoint (use --resume auto to continue the run "
                            "in --output, if any)")
        if self.resume == "auto" and self.output is None:
            raise UserError("--resume auto needs --output: the run folder to continue")
        return self


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass
class TrainConfig:
    """A training run: what ``config.yaml`` stores. The global batch is ``batch_size * grad_accum * world``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """The flat ``{key: value}`` form that ``config.yaml``, checkpoints and reports store."""
        return {opt.key: getattr(getattr(self, opt.section), opt.name) for opt in OPTIONS.values()
                if opt.section is not None}

    def validate(self) -> TrainConfig:
        """Raise ``UserError`` for values out of range and for contradictory options; returns self."""
        d, o, r = self.data, self.optim, self.run
        for opt in OPTIONS.values():  # every float a finite number (ranges below), every choice a known one
            value = getattr(getattr(self, opt.section), opt.name)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise UserError(f"{opt.flag} must be a finite number, got {value}")
            if opt.choices and value not in opt.choices:
                raise UserError(f"unknown {opt.flag} {value!r}; use one of: {', '.join(opt.choices)}")
        _require(lambda v: 0 <= v < 2**63, "must be in [0, 2**63)", seed=r.seed)  # what torch.manual_seed takes
        _require(lambda v: v >= 1, "must be at least 1", epochs=o.epochs, batch_size=o.batch_size,
                 grad_accum=o.grad_accum, val_batch_size=o.val_batch_size, train_subset=d.train_subset,
                 val_subset=d.val_subset)
        _require(lambda v: v >= 0, "must not be negative", workers=r.workers, keep=r.keep,
                 skip_nonfinite=r.skip_nonfinite, warmup_epochs=o.warmup_epochs, mixup=o.mixup, cutmix=o.cutmix,
                 weight_decay=o.weight_decay, min_lr=o.min_lr, warmup_lr=o.warmup_lr, color_jitter=d.color_jitter)
        _require(lambda v: v > 0, "must be positive", lr=o.lr, gate_lr_scale=o.gate_lr_scale, opt_eps=o.opt_eps)
        _require(lambda v: v >= 0, "must be a positive gradient norm (or none: off)", clip_grad=o.clip_grad)
        _require(lambda v: 0 <= v < 1, "must be in [0, 1)", momentum=o.momentum, ema_decay=o.ema_decay,
                 smoothing=o.smoothing)
        _require(lambda v: 0 <= v <= 1, "must be in [0, 1]", mixup_prob=o.mixup_prob,
                 mixup_switch_prob=o.mixup_switch_prob, reprob=d.reprob)
        _require(lambda v: 0 < v <= 1, "must be in (0, 1]", crop_pct=d.crop_pct)
        if not all(0 <= b < 1 for b in o.opt_betas or []):
            raise UserError(f"--opt-betas must each be in [0, 1), got {' '.join(map(str, o.opt_betas))}")
        if o.warmup_epochs and o.warmup_epochs >= o.epochs:
            raise UserError(f"--warmup-epochs ({o.warmup_epochs}) must be smaller than --epochs ({o.epochs})")
        if r.device != "auto" and not (r.device == "cpu" or r.device.startswith("cuda")):
            raise UserError(f"--device must be auto, cpu or cuda[:N], got {r.device!r}")
        if r.device == "cpu" and r.sync_bn:
            raise UserError("--sync-bn needs CUDA devices; drop --sync-bn or use --device cuda")
        if r.sync_bn and r.freeze_bn:
            raise UserError("--sync-bn and --freeze-bn contradict each other: frozen BatchNorm has nothing to sync")
        if r.device == "cpu" and r.amp and r.amp_dtype == "float16":
            raise UserError("--amp-dtype float16 needs CUDA; on CPU use --amp-dtype bfloat16 (or auto)")
        if (o.mixup > 0 or o.cutmix > 0) and o.batch_size % 2:
            raise UserError(f"Mixup/CutMix mix pairs within a batch: --batch-size must be even, got {o.batch_size}")
        if not isinstance(self.model.kwargs, dict):  # a config built in Python, not through the flag layer
            raise UserError(f"model_kwargs must be a mapping, got {self.model.kwargs!r}")
        return self


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _require(ok: Callable[[Any], bool], need: str, **values: Any) -> None:
    """Raise ``UserError`` ("--flag NEED, got VALUE") for the first value given (not None) that is not ``ok``."""
    for key, value in values.items():
        if value is not None and not ok(value):
            raise UserError(f"{_flag(key)} {need}, got {value}")


# ------------------------------------------------------------------------------------- the generated option table

_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Option:
    """One field of the tree as the outside world sees it: its YAML key and flag, type, default and help."""

    key: str
    section: str | None  # None: a launch option
    name: str
    kind: type  # bool, int, float, str, list (of floats) or dict
    optional: bool  # may be None ("none", "null" or "" on the command line and in YAML)
    default: Any
    help: str
    flag: str
    choices: tuple[str, ...] | None = None
    const: Any = None  # the value of the flag given alone (``--resume`` = ``--resume auto``)

    def convert(self, value: Any) -> Any:
        """A YAML value or a flag's text as this option's type; ``UserError`` (a ``ValueError``) when it cannot be."""
        if value is None or (self.optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
            if self.optional:
                return None
            raise UserError(f"option {self.key!r} cannot be empty")
        try:
            if self.kind is bool and isinstance(value, str):
                return _WORDS[value.lower()]
            if self.kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
                raise ValueError(value)  # no silent rounding: 2.5 epochs, True workers
            return [float(x) for x in value] if self.kind is list else self.kind(value)
        except (KeyError, TypeError, ValueError):
            raise UserError(f"option {self.key!r}: {value!r} is not a valid {self.kind.__name__}") from None


def _options(owner: type, section: str | None) -> Iterator[Option]:
    hints = typing.get_type_hints(owner)
    for f in dataclasses.fields(owner):
        args = typing.get_args(hints[f.name])  # int | None -> (int, NoneType); list[float] -> (float,)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hints[f.name]
        key = f.metadata.get("key", f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        yield Option(key, section, f.name, typing.get_origin(base) or base, optional, default, f.metadata["help"],
                     f.metadata.get("flag", _flag(key)), f.metadata.get("choices"), f.metadata.get("const"))


# key -> Option, in help order: the four sections, then the launch options
OPTIONS: dict[str, Option] = {o.key: o for section, owner in SECTIONS.items() for o in _options(owner, section)}
LAUNCH_OPTIONS: dict[str, Option] = {o.key: o for o in _options(LaunchOptions, None)}


def _unknown(key: str, known: Iterable[str], section: str = "") -> UserError:
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f"; did you mean {', '.join(section + c for c in close)}?" if close else ""
    return UserError(f"unknown training option '{section}{key}'{hint}")


def _split(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flat or sectioned ``values`` (``{"optim": {"lr": 0.1}}``) -> flat (training options, launch options),
    each converted to its option's type; ``UserError`` for an unknown key, with the closest known ones."""
    flat: dict[str, Any] = {}
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key not in SECTIONS or not isinstance(value, Mapping):  # "model" and "data" are also flat keys
            flat[key] = value
            continue
        by_name = {o.name: o.key for o in OPTIONS.values() if o.section == key}
        for raw_name, inner in value.items():
            name = str(raw_name).replace("-", "_")
            if name not in by_name:
                raise _unknown(name, by_name, f"{key}.")
            flat[by_name[name]] = inner
    options: dict[str, Any] = {}
    launch: dict[str, Any] = {}
    for key, value in flat.items():
        opt = OPTIONS.get(key) or LAUNCH_OPTIONS.get(key)
        if opt is None:
            raise _unknown(key, [*OPTIONS, *LAUNCH_OPTIONS])
        (options if opt.section else launch)[key] = opt.convert(value)
    return options, launch


def make_config(*layers: Mapping[str, Any], **values: Any) -> TrainConfig:
    """Defaults updated by each mapping (flat keys or sections) in turn, then by ``values`` (later wins)."""
    cfg = TrainConfig()
    for layer in (*layers, values):
        options, launch = _split(layer)
        if launch:
            key = next(iter(launch))
            raise UserError(f"{key!r} is a launch option, not part of a training config: pass it in "
                            f"LaunchOptions (train(cfg, LaunchOptions({key}=...))) or as {_flag(key)}")
        for key, value in options.items():
            setattr(getattr(cfg, OPTIONS[key].section), OPTIONS[key].name, value)
    return cfg


def from_flat(values: Mapping[str, Any]) -> tuple[TrainConfig, LaunchOptions]:
    """One mapping of flag-named values, training and launch options mixed -> ``(TrainConfig, LaunchOptions)``."""
    options, launch = _split(values)
    return make_config(options), LaunchOptions(**launch)  # a launch option's key is its field's name


# -------------------------------------------------------------------------------------------------- YAML files

def resolve_config_path(name_or_path: str) -> Path:
    """A recipe name (``cpu_demo``, ``imagenet_bav2.yaml``), a YAML file path or a run folder -> the file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "config.yaml").is_file():
        return path / "config.yaml"
    for candidate in (CONFIG_DIR / name_or_path, CONFIG_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"--config {name_or_path}: no such file or built-in recipe (built-in: {known})")


# Construction arguments that fetch or locate pretrained weights. Settings read back from a file (a recipe, a
# checkpoint, a run folder's config.yaml, a saved model folder) never carry them into create_model.
REMOTE_KWARGS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"})


def load_yaml(path: str | os.PathLike[str], quiet: bool = False) -> dict[str, Any]:
    """The training options of a recipe or a run's ``config.yaml`` as flat keys, checked and converted. Launch options
    (older run folders stored them) and the ``model_kwargs`` in ``REMOTE_KWARGS`` are ignored, with a warning unless
    ``quiet``: a file never sets where a run goes or makes it fetch the weights it names."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of option: value")
    options, launch = _split(raw)
    ignored = sorted(k for k, v in launch.items() if v != LAUNCH_OPTIONS[k].default)
    if ignored and not quiet:
        warnings.warn(f"{path}: ignored {', '.join(ignored)}: launch options are taken from the command line "
                      "(or the Python call) only", stacklevel=2)
    kwargs = options.get("model_kwargs", {})
    remote = sorted(k for k in kwargs if k in REMOTE_KWARGS)
    if remote:
        options["model_kwargs"] = {k: v for k, v in kwargs.items() if k not in REMOTE_KWARGS}
        if not quiet:
            warnings.warn(f"ignoring {', '.join(remote)} stored with {path}: loading saved weights never downloads",
                          stacklevel=2)
    return _absolute(options)


def dump_yaml(cfg: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Write ``cfg`` as a ``config.yaml``: flat keys in section order, no launch options."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------------------------------- flags

def model_kwargs_arg(text: str) -> dict[str, Any]:
    """``"drop_rate=0.1 rd_ratio=0.125"`` or a YAML/JSON mapping -> dict (values parsed as YAML scalars). Not
    ``timm.utils.ParseKwargs``: it reads the quoted form as one value, ``x=true`` as text, ``x`` as a traceback."""
    text = text.strip()
    try:
        if text.startswith("{"):
            value = yaml.safe_load(text)
        else:
            value = {}
            for item in text.replace(",", " ").split():
                key, sep, raw = item.partition("=")
                if not sep or not key:
                    raise argparse.ArgumentTypeError(f"expected key=value, got {item!r}")
                value[key] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not a YAML mapping ({str(exc).splitlines()[0]})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected key=value pairs, got {text!r}")
    return value


def _argument(opt: Option, show_default: bool) -> dict[str, Any]:
    """``add_argument`` keywords for ``opt``; an unset flag stays absent from the namespace (``dest``: the key)."""
    said = "default:" in opt.help or opt.default is None or opt.default == {} or not show_default
    kw: dict[str, Any] = {"dest": opt.key, "default": argparse.SUPPRESS,
                          "help": opt.help if said else f"{opt.help} (default: {opt.default})"}
    if opt.kind is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif opt.kind is dict:
        kw.update(type=model_kwargs_arg, metavar="K=V ...")
    elif opt.kind is list:
        kw.update(action=listed(float), nargs="+", metavar="X")
    else:
        def parse(text: str) -> Any:
            return opt.convert(text)

        parse.__name__ = opt.kind.__name__  # argparse names a failed conversion by it: "invalid int value: 'x'"
        kw.update(type=parse, choices=opt.choices, metavar="N" if opt.kind is int else opt.key.upper().split("_")[-1])
    if opt.const is not None:
        kw.update(nargs="?", const=opt.const)
    return kw


def add_train_arguments(parser: argparse.ArgumentParser, launch: bool = True, exclude: tuple[str, ...] = (),
                        config_help: str | None = None, show_defaults: bool = True) -> None:
    """``--config`` and one flag per training option (grouped by section), plus the launch flags with ``launch``.
    ``exclude``: keys the command sets itself; ``show_defaults=False`` where a recipe gives the defaults (demo)."""
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="NAME|FILE",
                        help=config_help or "recipe name under configs/ (cpu_demo, imagenet_bav2, imagenet_bav1), a "
                                            "YAML file, or a run folder (its config.yaml; a new run starts)")
    suffix = "" if show_defaults else " (default: the recipe's)"
    titles = {"model": "model", "data": "data", "optim": "optimisation", "run": "run"}
    groups = {name: parser.add_argument_group(f"{title} options{suffix}") for name, title in titles.items()}
    if launch:
        groups[None] = parser.add_argument_group("launch options (never stored with the run)")
    for opt in [*OPTIONS.values(), *LAUNCH_OPTIONS.values()]:
        if opt.section in groups and opt.key not in exclude:
            groups[opt.section].add_argument(opt.flag, **_argument(opt, show_defaults or opt.section is None))


def _absolute(values: dict[str, Any]) -> dict[str, Any]:
    """``folder:data/x`` -> ``folder:/abs/data/x`` (also ``cifar10:``, ``cifar100:``, local ``wds:``), so that a
    stored run config names the same files from any working directory."""
    kind, _, location = str(values.get("data", "")).partition(":")
    if location and kind in ("folder", "cifar10", "cifar100", "wds") and "://" not in location:
        values["data"] = f"{kind}:{Path(location).expanduser().resolve()}"
    return values


def flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given as flags (flat keys); a data location becomes an absolute path."""
    return _absolute({key: getattr(args, key) for key in OPTIONS if hasattr(args, key)})


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, LaunchOptions]:
    """Merge defaults < stored run config (on resume) < --config file < the flags given; both validated. Launch
    options come from the flags only, never from a recipe or a stored ``config.yaml``."""
    launch = LaunchOptions(**{key: getattr(args, key) for key in LAUNCH_OPTIONS if hasattr(args, key)})
    recipe = load_yaml(resolve_config_path(args.config)) if getattr(args, "config", None) else {}
    stored: dict[str, Any] = {}
    if launch.resume and launch.output and (Path(launch.output) / "config.yaml").is_file():
        stored = load_yaml(Path(launch.output) / "config.yaml", quiet=True)
    return make_config(stored, recipe, flags_given(args)).validate(), launch.validate()
