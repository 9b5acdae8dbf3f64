"""``train(cfg)``: the training loop, built from timm's parts, readable in one sitting.

    data (build_datasets) -> model (create_model) -> optimizer (create_optimizer_v2: no decay on 1-D params)
    -> per-iteration schedule (create_scheduler_v2: warm-up + cosine) -> epochs of
       [Mixup/CutMix -> autocast forward -> loss -> finite check -> scaled backward (accumulated)
        -> unscale + clip -> step -> EMA] -> exact DDP evaluation -> atomic checkpoint -> metrics, plots.

Reproducibility: every epoch reseeds Python, NumPy and torch from ``(seed, rank, epoch)`` and DistributedSampler
orders the data from ``(seed, epoch)``, so a run resumed from an epoch checkpoint sees the same batches and the same
augmentations as an uninterrupted one; with ``deterministic`` on CPU its weights end up bit-identical. A run stopped
by a signal mid-epoch (see ``interrupt``) stores its position and RNG states, and continues with the remaining
batches of that epoch, bit-identical too.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shlex
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .. import data as data_module
from ..config import LaunchOptions, TrainConfig, make_config
from ..data.shards import ShardSet, shard_loader
from ..errors import UserError
from ..files import write_text
from ..models.checks import check_model_input
from ..weights import checkpoint as ckpt
from ..weights.safe_load import load_state_dict_strict
from . import distributed
from .evaluate import evaluate
from .hardware import amp_dtype_for, autocast, numerics_report
from .interrupt import StopRequest, TrainingInterrupted
from .records import RunRecorder, check_stored_config, holds_run, write_eval_report, write_json
from .runlock import LOCK_ENV, RunLock, refuse_other_files

# Options that define the learning-rate schedule; a resume that changes them rebuilds the schedule.
_SCHEDULE_FIELDS = ("sched", "epochs", "warmup_epochs", "warmup_prefix", "warmup_lr", "min_lr", "lr", "batch_size",
                    "grad_accum")

log = logging.getLogger(__name__)


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (a non-finite loss); the last good checkpoint is left in place."""


def seed_everything(seed: int, *salt: int) -> None:
    """Seed Python, NumPy and torch from ``(seed, *salt)`` (e.g. rank and epoch), independent of history."""
    a, b = np.random.SeedSequence([seed, *salt]).generate_state(2)
    random.seed(int(a))
    np.random.seed(int(b))
    torch.manual_seed(int(a) << 32 | int(b))


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """cuDNN and torch's algorithm choice for one run (deterministic, or cuDNN's autotuner); the caller's settings
    are restored afterwards."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    set_env = enabled and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # needed by deterministic cuBLAS
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


class EpochKeyedSampler(distributed.ResumableSampler):
    """DistributedSampler yielding ``(epoch, index)``, so that persistent workers know the epoch of each sample."""

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())


class EpochSeeded(torch.utils.data.Dataset):
    """``dataset[index]`` with Python, NumPy and torch seeded from ``(seed, epoch, index)`` first."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        seed_everything(self.seed, epoch, index)
        return self.dataset[index]


@dataclass
class Run:
    """Everything a training run holds, so the loop functions take one argument."""

    cfg: TrainConfig
    options: LaunchOptions
    dist: distributed.DistInfo
    folder: Path
    model: nn.Module  # the bare model (checkpoints, EMA, evaluation)
    net: nn.Module  # the model being trained: ``model`` or its DDP wrapper
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: Any  # ResumableSampler, or ShardBatches for streamed shards: set_epoch(epoch)
    data_info: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    mixup: Mixup | None
    ema: ModelEmaV3 | None
    amp_dtype: torch.dtype | None
    updates_per_epoch: int
    params: int
    step: int = 0
    start_epoch: int = 0
    skipped_steps: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    train_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    recorder: RunRecorder | None = None
    custom_model: bool = False  # the caller's nn.Module rather than cfg.model from the registry
    partial: dict[str, Any] | None = None  # where a run stopped mid-epoch resumes: batch, sums, seconds, RNG
    stop: StopRequest = field(default_factory=StopRequest)
    vote: distributed.StopVote = field(default_factory=distributed.StopVote)
    on_step: Callable[[int], None] | None = None

    @property
    def device(self) -> torch.device:
        return self.dist.device


# ---------------------------------------------------------------------------------------------------- set-up

def _claim_folder(options: LaunchOptions, folder: Path, stack: contextlib.ExitStack) -> Path | None:
    """Lock the run folder for this run, check it may be (re)used, clear a killed writer's temp files; the
    checkpoint to resume from. Rank 0 only."""
    resume = options.resume
    if resume is None and distributed.restart_count() > 0:
        resume = "auto"  # torchrun restarted the job after a failure: continue from the last checkpoint
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--output {folder} is a file, not a folder")
    stack.enter_context(RunLock(folder))  # before any check, so two runs cannot both pass them
    if resume is None and holds_run(folder):
        raise UserError(f"{folder} already holds a run; continue it with --resume auto, or choose another --output")
    if not options.overwrite and not holds_run(folder):
        refuse_other_files(folder)
    if resume is not None and holds_run(folder):
        check_stored_config(folder)
    ckpt.clean_temps(folder)
    if resume == "auto":
        return ckpt.find_resume(folder)
    return Path(resume) if resume is not None else None


def _run_folder(cfg: TrainConfig, options: LaunchOptions, info: distributed.DistInfo,
                stack: contextlib.ExitStack) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (same on every rank); refuses an occupied folder."""
    default = Path("runs") / f"{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    folder = Path(distributed.broadcast_object(str(options.output or default)))
    path, problem = None, None
    if info.is_main:
        try:
            path = _claim_folder(options, folder, stack)
        except UserError as exc:
            problem = str(exc)
    # every rank raises the same error, instead of the others waiting for rank 0 forever
    path, problem = distributed.broadcast_object((str(path) if path else None, problem))
    if problem:
        raise UserError(problem)
    return folder, Path(path) if path else None


def _custom_data_info(train_set: Dataset, model: nn.Module | None) -> data_module.DataInfo:
    """What the engine needs to know about the caller's datasets: classes, channels, size (from one sample)."""
    try:
        image, _ = train_set[0]
    except (TypeError, ValueError, IndexError) as exc:
        raise UserError(f"the training dataset must yield (image tensor, label) pairs: {exc}") from None
    if not torch.is_tensor(image) or image.ndim != 3:
        raise UserError(f"the training dataset must yield (C, H, W) image tensors, got {type(image).__name__} "
                        f"{tuple(getattr(image, 'shape', ()))}")
    names = getattr(train_set, "classes", None)
    if names is not None:
        num_classes = len(names)
    elif model is not None:
        model.eval()
        with torch.no_grad():  # the number of outputs of the caller's model
            num_classes = int(model(image.unsqueeze(0).to(next(model.parameters()).device)).shape[-1])
    elif isinstance(train_set, torch.utils.data.TensorDataset):
        num_classes = int(train_set.tensors[1].max()) + 1
    else:
        raise UserError("cannot tell the number of classes: pass a model, or give the dataset a `classes` list")
    names = [str(c) for c in names] if names is not None else [str(i) for i in range(num_classes)]
    return data_module.DataInfo(name="custom", num_classes=num_classes, in_chans=image.shape[0],
                                img_size=image.shape[-1], class_names=names, mean=(), std=())


def _build_data(cfg: TrainConfig, info: distributed.DistInfo, datasets: tuple[Dataset, Dataset] | None = None,
                model: nn.Module | None = None):
    if datasets is not None:
        train_set, val_set = datasets
        data_info = _custom_data_info(train_set, model)
    else:
        # rank 0 first, so a download or cache happens once; the others wait, then read the same files
        if not info.is_main:
            distributed.barrier()
        try:
            train_set, val_set, data_info = data_module.build_datasets(cfg.data)
        finally:
            if info.is_main:
                distributed.barrier()
    global_batch = cfg.optim.batch_size * info.world_size
    if len(train_set) < global_batch * cfg.optim.grad_accum:
        raise UserError(f"the training set has {len(train_set)} samples, fewer than one optimizer step needs "
                        f"({cfg.optim.batch_size} x {cfg.optim.grad_accum} accumulation x {info.world_size} "
                        "processes); lower "
                        "--batch-size or --grad-accum, or raise --train-subset")
    o, seed = cfg.optim, cfg.run.seed
    options = data_module.loader_options(cfg.run.workers, info.device)
    if isinstance(train_set, ShardSet):  # streamed: the data set itself splits each epoch over ranks and workers
        train_loader = shard_loader(train_set, o.batch_size, info.rank, info.world_size, True, seed, options)
        val_loader = shard_loader(val_set, o.val_batch_size or 2 * o.batch_size, info.rank, info.world_size,
                                  False, seed, options)
        return train_loader, val_loader, train_loader.dataset, data_info
    if cfg.run.workers > 0:
        # persistent workers keep their random state across epochs, so each sample's augmentation is seeded from
        # (seed, epoch, index) instead: the same for a resumed run, whatever the worker that draws it
        sampler: distributed.ResumableSampler = EpochKeyedSampler(train_set, num_replicas=info.world_size,
                                                                  rank=info.rank, shuffle=True, seed=cfg.run.seed)
        train_set = EpochSeeded(train_set, cfg.run.seed)
    else:
        sampler = distributed.ResumableSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                               shuffle=True, seed=cfg.run.seed)
    train_loader = DataLoader(train_set, batch_size=cfg.optim.batch_size, sampler=sampler, drop_last=True, **options)
    val_loader = DataLoader(val_set, batch_size=cfg.optim.val_batch_size or 2 * cfg.optim.batch_size,
                            sampler=distributed.ShardSampler(len(val_set), info.rank, info.world_size), **options)
    return train_loader, val_loader, sampler, data_info


def _build_model(cfg: TrainConfig, data_info, device: torch.device, unsafe: bool = False,
                 model: nn.Module | None = None, resuming: bool = False) -> nn.Module:
    if model is None:
        from ..models.registry import REMOTE_KWARGS, create_model

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank and for every model run with this seed
        # a resumed run takes its weights from the checkpoint: nothing read back from the run folder downloads
        kwargs = {k: v for k, v in cfg.model.kwargs.items() if not (resuming and k in REMOTE_KWARGS)}
        try:
            model = create_model(cfg.model.name, num_classes=data_info.num_classes, in_chans=data_info.in_chans,
                                 **kwargs)
        except TypeError as exc:
            raise UserError(f"--model-kwargs {cfg.model.kwargs} not accepted by {cfg.model.name}: {exc}") from None
    if cfg.model.init_from and not resuming:
        from .finetune import init_from

        init_from(model, cfg.model.init_from, unsafe)
    if cfg.run.freeze_bn:
        from ..layers.freeze import freeze_bn

        model = freeze_bn(model)
    model.to(device)
    if cfg.run.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _build_optimization(cfg: TrainConfig, model: nn.Module, updates_per_epoch: int):
    o = cfg.optim
    extra: dict[str, Any] = {}
    if o.opt_eps is not None:
        extra["eps"] = o.opt_eps
    if o.opt_betas:
        extra["betas"] = tuple(o.opt_betas)
    from .finetune import optimizer_params

    params = optimizer_params(model, o.lr, o.weight_decay, o.filter_bias_and_bn, o.gate_lr_scale)
    try:
        optimizer = create_optimizer_v2(params, opt=o.opt, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                                        filter_bias_and_bn=o.filter_bias_and_bn, **extra)
    except (AssertionError, ValueError, TypeError) as exc:
        raise UserError(f"--opt {o.opt}: {exc} (timm optimizer names: adamw, sgd, momentum, lamb, ...)") from None
    # ``epochs`` is the whole run; with warmup_prefix timm's num_epochs is the decay after the warm-up, which then
    # starts from the peak lr and ends at min_lr on the last step (the BAv1 reference: 5 warm-up + 95 cosine)
    decay_epochs = o.epochs - o.warmup_epochs if o.warmup_prefix else o.epochs
    scheduler, _ = create_scheduler_v2(optimizer, sched=o.sched, num_epochs=decay_epochs,
                                       warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr,
                                       warmup_prefix=o.warmup_prefix, min_lr=o.min_lr, step_on_epochs=False,
                                       updates_per_epoch=updates_per_epoch)
    return optimizer, scheduler


def _restore(run: Run, path: Path) -> None:
    """Load a checkpoint into the run: weights, optimizer, schedule, scaler, EMA, counters, history, RNG."""
    cfg = run.cfg
    state = ckpt.load_checkpoint(path, unsafe=run.options.unsafe_load)
    stored = state["config"]
    if run.custom_model:
        if state.get("model_class") != _model_class(run.model):
            raise UserError(f"checkpoint {path} is for model class {state.get('model_class')!r}, "
                            f"not {_model_class(run.model)!r}")
    elif stored.get("model") != cfg.model.name:
        raise UserError(f"checkpoint {path} is for model {stored.get('model')!r}, not {cfg.model.name!r}")
    load_state_dict_strict(run.model, state["model"], source=f"checkpoint {path}")
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None and state.get("scheduler") is not None:
        known = {k: v for k, v in stored.items() if k in _SCHEDULE_FIELDS}  # older checkpoints lack newer keys
        before, now = make_config(known).to_dict(), cfg.to_dict()
        if all(before[k] == now[k] for k in _SCHEDULE_FIELDS):
            run.scheduler.load_state_dict(state["scheduler"])
        elif run.dist.is_main:
            warnings.warn("the schedule settings changed since the checkpoint; the learning rate follows the new "
                          f"schedule from step {state['step']}", stacklevel=2)
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None:
        if state.get("ema") is not None:
            run.ema.module.load_state_dict(state["ema"])
        else:
            run.ema.module.load_state_dict(state["model"])
    run.start_epoch, run.step = int(state["epoch"]), int(state["step"])
    run.history = list(state.get("history", []))
    run.best_top1, run.best_epoch = float(state.get("best_top1", -1.0)), int(state.get("best_epoch", 0))
    run.train_time_s = float(state.get("train_time_s", 0.0))
    run.skipped_steps = int(state.get("skipped_steps", 0))
    rng = state.get("rng") or []
    batch = int(state.get("batch", 0))
    if batch:  # stopped mid-epoch: continue with the remaining batches, as each rank left them
        if len(rng) != run.dist.world_size or stored.get("batch_size") != cfg.optim.batch_size:
            raise UserError(f"checkpoint {path} was written mid-epoch by {len(rng)} process(es) with --batch-size "
                            f"{stored.get('batch_size')}; resume it with the same (it holds their data positions)")
        partial = state["partial"]
        run.partial = {"batch": batch, "rng": rng[run.dist.rank], "sums": partial["sums"][run.dist.rank],
                       "seconds": float(partial["seconds"])}
    elif len(rng) == run.dist.world_size:
        ckpt.set_rng_state(rng[run.dist.rank])
    if run.scheduler is not None:
        run.scheduler.step_update(num_updates=run.step)
    if run.dist.is_main:
        # a resume from further back must not overwrite (nor prune) the checkpoints after it
        moved = ckpt.set_aside_newer(run.folder, run.start_epoch, batch)
        if moved:
            log.info(f"moved {len(moved)} checkpoint(s) newer than {Path(state['path']).name} to "
                  f"{run.folder / ckpt.CKPT_DIR / 'superseded'}")
        where = f"epoch {run.start_epoch}" + (f", batch {batch} of epoch {run.start_epoch + 1}" if batch else "")
        log.info(f"resumed from {state['path']} ({where}, step {run.step})")


def _model_class(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _setup(cfg: TrainConfig, options: LaunchOptions, info: distributed.DistInfo, stack: contextlib.ExitStack,
           user_model: nn.Module | None = None, datasets: tuple[Dataset, Dataset] | None = None) -> Run:
    import timm

    if user_model is None and not timm.is_model(cfg.model.name):  # fail before any data is read
        from ..models import create_model

        create_model(cfg.model.name)  # raises UserError naming similar models
    folder, resume_path = _run_folder(cfg, options, info, stack)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    train_loader, val_loader, sampler, data_info = _build_data(cfg, info, datasets, user_model)
    model = _build_model(cfg, data_info, info.device, options.unsafe_load, user_model, resuming=resume_path is not None)
    params = sum(p.numel() for p in model.parameters())
    if cfg.run.sync_bn:
        if info.device.type != "cuda":
            raise UserError("--sync-bn needs CUDA devices; drop --sync-bn on CPU")
        if info.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    updates_per_epoch = len(train_loader) // cfg.optim.grad_accum
    optimizer, scheduler = _build_optimization(cfg, model, updates_per_epoch)
    r = cfg.run
    amp_dtype = amp_dtype_for(r.amp, info.device, r.amp_dtype)
    if info.is_main:
        log.info(numerics_report(r.amp, r.amp_dtype, amp_dtype, r.channels_last, info.device))
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16)
    ema = ModelEmaV3(model, decay=cfg.optim.ema_decay) if cfg.optim.ema else None
    mixup = None
    o = cfg.optim
    if o.mixup > 0 or o.cutmix > 0:
        mixup = Mixup(mixup_alpha=o.mixup, cutmix_alpha=o.cutmix, prob=o.mixup_prob, switch_prob=o.mixup_switch_prob,
                      mode=o.mixup_mode, label_smoothing=o.smoothing, num_classes=data_info.num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.optim.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=cfg.optim.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()
    net: nn.Module = model
    if info.distributed:
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    run = Run(cfg, options, info, folder, model, net, train_loader, val_loader, sampler, data_info, optimizer,
              scheduler, scaler, criterion, mixup, ema, amp_dtype, updates_per_epoch, params,
              custom_model=user_model is not None)
    if resume_path is not None:
        _restore(run, resume_path)
    elif options.resume == "auto" and info.is_main and (folder / ckpt.CKPT_DIR).is_dir():
        log.info(f"no usable checkpoint in {folder}; starting from scratch")
    if info.is_main:
        run.recorder = RunRecorder(folder, cfg, run.start_epoch)
        if data_info.skipped:
            write_text(folder / "skipped_files.txt", "\n".join(data_info.skipped) + "\n")
            log.info(f"data: skipped {len(data_info.skipped)} unreadable files (list in {folder}/skipped_files.txt)")
    return run


# ------------------------------------------------------------------------------------------------- the loop

def _nonfinite(run: Run, what: str, step: int, epoch: int, batch: int, batches: int) -> None:
    """Count a skipped step with a NaN/Inf loss; stop the run when more than ``skip_nonfinite`` were seen."""
    run.skipped_steps += 1
    where = f"step {step} (epoch {epoch + 1}, batch {batch + 1}/{batches})"
    last = ckpt.find_resume(run.folder, good_only=True) if run.dist.is_main else None
    kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
    if run.skipped_steps > run.cfg.run.skip_nonfinite:
        hint = (f"more than --skip-nonfinite {run.cfg.run.skip_nonfinite} bad steps" if run.cfg.run.skip_nonfinite
                else "lower --lr, enable --clip-grad, or skip a few bad steps with --skip-nonfinite N")
        raise TrainingStopped(f"{what} at {where}; stopped ({hint}); {kept}")
    if run.dist.is_main:
        log.warning("warning: %s at %s: step skipped (%d/%d allowed)", what, where, run.skipped_steps,
                    run.cfg.run.skip_nonfinite)


def _optimizer_step(run: Run, params: list[nn.Parameter]) -> torch.Tensor | None:
    """Clip, step, update the scaler and EMA; with ``skip_nonfinite`` skip a step whose gradients are not finite.

    Returns the device-side "skipped" flag (0-dim bool) when skipping is on, else None. The flag is computed from
    the gradient norm, on the device. Torch's fused optimizers (and the fp16 GradScaler) take it without a host
    read; any other optimizer needs one host read of it per optimizer step, the price of skipping a step exactly
    (zeroing the gradients instead would still apply weight decay and momentum).
    """
    cfg, optimizer, scaler = run.cfg, run.optimizer, run.scaler
    skip = cfg.run.skip_nonfinite > 0
    found = None
    if cfg.optim.clip_grad or skip:
        scaler.unscale_(optimizer)  # a no-op without fp16 scaling
    if cfg.optim.clip_grad:
        norm = nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
    elif skip:
        norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    stepped = True
    if skip:
        found = ~torch.isfinite(norm)
        if scaler.is_enabled():
            scaler.step(optimizer)  # the scaler skips non-finite steps itself
        elif getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.found_inf = found.float()  # fused optimizers skip the update on the device
            optimizer.step()
            del optimizer.found_inf
        else:
            stepped = not found.item()
            if stepped:
                optimizer.step()
    else:
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if run.ema is not None and stepped:
        run.ema.update(run.model, step=run.step)
    return found


def _read_window(run: Run, window: torch.Tensor, used: int, first: int, first_step: int, epoch: int,
                 batches: int, samples: int, totals: tuple[float, float]) -> tuple[float, float]:
    """Bring the window's per-micro-batch figures to the host (one collective, one read); handle bad steps.

    ``window`` is ``(2, W)``: loss x samples of each micro-batch, and 1 on the last micro-batch of a step that was
    skipped on the device. Returns ``totals`` (loss x samples, samples) plus the micro-batches with a finite loss
    on every rank, added one at a time: the same sums wherever windows start (a mid-epoch resume starts one).
    """
    block = distributed.all_reduce_sum(window[:, :used].double())  # a NaN on any rank makes the sum NaN
    losses, skipped = block.tolist()
    window.zero_()
    world, accum = run.dist.world_size, run.cfg.optim.grad_accum
    loss_sum, seen = totals
    for start in range(0, used, accum):
        step_losses = losses[start:start + accum]
        bad = [i for i, value in enumerate(step_losses) if not math.isfinite(value)]
        index = first + start  # micro-batch index in the epoch
        step = first_step + index // accum + 1
        if bad:
            value = step_losses[bad[0]] / (samples * world)
            _nonfinite(run, f"non-finite loss ({value})", step, epoch, index + bad[0], batches)
        elif skipped[start + accum - 1]:
            _nonfinite(run, "non-finite gradient", step, epoch, index + accum - 1, batches)
        for value in step_losses:
            if math.isfinite(value):
                loss_sum += value
                seen += samples * world
    return loss_sum, seen


# Host reads of the loss and the non-finite vote: every this many optimizer steps and at the end of an epoch.
SYNC_EVERY = 10


def train_one_epoch(run: Run, epoch: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """One pass over the training data (the rest of it after ``partial``, the position a stopped run left);
    returns the mean training loss, samples seen and seconds taken, or, when all ranks agreed to stop on a
    signal, ``stopped_at`` (batches done) with the running sums.

    Nothing here waits for the device per step: losses and "skipped" flags stay on the device in a window of
    ``SYNC_EVERY`` optimizer steps, read (and summed over ranks in one collective) at its end. A non-finite loss
    therefore stops the run at the next read, naming the first bad step; the weights it touched are never
    checkpointed. With ``skip_nonfinite`` a bad step is skipped before the optimizer sees it (see
    ``_optimizer_step``); a non-finite loss on any rank poisons the gradients it contributes, so DDP's own gradient
    all-reduce tells every rank to skip the same step without another collective.
    """
    cfg, net, device = run.cfg, run.net, run.device
    accum = cfg.optim.grad_accum
    batches = run.updates_per_epoch * accum  # trailing batches that do not fill an optimizer step are left out
    skip = cfg.run.skip_nonfinite > 0
    buffers = list(run.model.buffers()) if skip else []
    params = [p for p in run.model.parameters() if p.requires_grad]
    window = torch.zeros(2, SYNC_EVERY * accum, device=device)
    done, before, totals = 0, 0.0, (0.0, 0.0)  # batches done, seconds taken, (loss x samples, samples) so far
    if partial is not None:
        done, before, totals = partial["batch"], partial["seconds"], tuple(partial["sums"])
    first, first_step = done, run.step - done // accum  # the window's first micro-batch; steps before this epoch
    resumable = isinstance(run.sampler, distributed.ResumableSampler)
    if resumable:
        run.sampler.start = done * cfg.optim.batch_size  # this rank's samples already trained on (reset below)
    loader = iter(run.train_loader)  # draws the loader's base seed as the uninterrupted epoch did
    if not resumable:
        for _ in range(done):  # a stream cannot start part-way: read past the batches already trained on
            next(loader)
    if partial is not None:
        ckpt.set_rng_state(partial["rng"])  # the generators exactly as they were when the run stopped
    stopped_at = 0
    net.train()
    start = time.perf_counter()
    bar = tqdm(total=batches, initial=done, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batch",
               dynamic_ncols=True, disable=not (run.options.progress and run.dist.is_main), leave=False)
    for index, (images, labels) in enumerate(loader, start=done):
        if index >= batches:
            break
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = labels
        if run.mixup is not None:
            images, targets = run.mixup(images, labels)
        last_micro = (index + 1) % accum == 0
        saved = [b.detach().clone() for b in buffers]  # BN statistics to restore if this step is skipped
        # gradients are all-reduced only on the batch that completes an optimizer step
        sync = contextlib.nullcontext() if last_micro or not run.dist.distributed else net.no_sync()
        with sync:
            with autocast(device, run.amp_dtype):
                loss = run.criterion(net(images), targets)
            window[0, index - first] = loss.detach() * len(labels)
            if skip:
                finite = torch.isfinite(loss.detach())
                loss = loss * torch.where(finite, 1.0, math.nan)  # NaN gradients carry the vote to every rank
            run.scaler.scale(loss / accum).backward()
            if skip:
                for buf, old in zip(buffers, saved):  # after backward, which may still need the buffers
                    buf.copy_(torch.where(finite, buf, old))
        if last_micro:
            run.step += 1
            found = _optimizer_step(run, params)
            if found is not None:
                window[1, index - first] = found
            if run.scheduler is not None:
                run.scheduler.step_update(num_updates=run.step)
            if run.on_step is not None:
                run.on_step(run.step)
            if run.vote.poll(run.stop.requested):  # a signal: stop here, on every rank at the same step
                stopped_at = index + 1
        bar.update(1)
        if last_micro and (run.step - first_step) % SYNC_EVERY == 0:
            got = _read_window(run, window, index + 1 - first, first, first_step, epoch, batches, len(labels),
                               totals)
            first = index + 1
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{(got[0] - totals[0]) / max(got[1] - totals[1], 1.0):.4f}",
                            lr=f"{_lr(run):.2e}", img_s=f"{got[1] / max(elapsed, 1e-9):.0f}")
            totals = got
        if stopped_at:
            break
    if first < (stopped_at or batches):
        totals = _read_window(run, window, (stopped_at or batches) - first, first, first_step, epoch, batches,
                              cfg.optim.batch_size, totals)
    bar.close()
    del loader
    if resumable:
        run.sampler.start = 0
    seconds = before + time.perf_counter() - start
    if stopped_at:
        return {"stopped_at": stopped_at, "sums": list(totals), "epoch_time_s": seconds}
    return {"train_loss": totals[0] / max(totals[1], 1.0), "train_samples": int(totals[1]), "epoch_time_s": seconds}


def _lr(run: Run) -> float:
    return max(group["lr"] for group in run.optimizer.param_groups)


def _sync_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's BatchNorm statistics, so all ranks evaluate (and save) the same model."""
    if distributed.active():
        for buf in module.buffers():
            torch.distributed.broadcast(buf, src=0)


def _evaluate(run: Run) -> dict[str, Any]:
    _sync_buffers(run.model)
    kw = dict(device=run.device, num_classes=run.data_info.num_classes, amp_dtype=run.amp_dtype,
              channels_last=run.cfg.run.channels_last)
    metrics = evaluate(run.model, run.val_loader, **kw)
    if run.ema is not None:
        _sync_buffers(run.ema.module)
        ema = evaluate(run.ema.module, run.val_loader, **kw)
        metrics.update({f"ema_{k}": ema[k] for k in ("top1", "top5", "loss")})
    return metrics


def _checkpoint_state(run: Run, epoch: int, stopped: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state after ``epoch`` (0-based), or ``stopped`` part-way through it (collective: every rank's RNG)."""
    rng = distributed.all_gather_object(ckpt.rng_state())  # every rank's generators
    position: dict[str, Any] = {"epoch": epoch + 1, "batch": 0}
    if stopped is not None:
        position = {"epoch": epoch, "batch": stopped["stopped_at"],
                    "partial": {"sums": distributed.all_gather_object(stopped["sums"]),
                                "seconds": stopped["epoch_time_s"]}}
    return {
        "format": "bridgeattn-train-checkpoint/1",
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "ema": run.ema.module.state_dict() if run.ema is not None else None,
        **position,
        "step": run.step,
        "rng": rng,
        "config": run.cfg.to_dict(),
        "history": run.history,
        "best_top1": run.best_top1,
        "best_epoch": run.best_epoch,
        "train_time_s": run.train_time_s,
        "skipped_steps": run.skipped_steps,
        "num_classes": run.data_info.num_classes,
        "in_chans": run.data_info.in_chans,
        "class_names": list(run.data_info.class_names),
        # what evaluation does to an image, so the weights can be used without the data set
        "preprocessing": data_module.eval_preprocessing(run.cfg.data, run.data_info).to_dict(),
        "model_class": _model_class(run.model),
    }


def _summary(run: Run, final: dict[str, Any], status: str = "finished", message: str = "") -> dict[str, Any]:
    samples = sum(r.get("train_samples", 0) for r in run.history)
    epoch_time = sum(r.get("epoch_time_s", 0.0) for r in run.history)
    summary: dict[str, Any] = {
        "status": status,
        "model": _model_class(run.model) if run.custom_model else run.cfg.model.name,
        "data": run.data_info.name if run.data_info.name == "custom" else run.cfg.data.spec,
        "top1": final.get("top1"),
        "top5": final.get("top5"),
        "loss": final.get("loss"),
        "best_top1": run.best_top1 if run.best_epoch else None,  # None: no epoch with finite results
        "best_epoch": run.best_epoch,
        "epochs": len(run.history),
        "steps": run.step,
        "train_time_s": run.train_time_s,
        "train_img_per_s": samples / epoch_time if epoch_time else None,
        "params": run.params,
        "num_classes": run.data_info.num_classes,
        "world_size": run.dist.world_size,
        "global_batch": run.cfg.optim.batch_size * run.cfg.optim.grad_accum * run.dist.world_size,
        "device": str(run.device),
        "seed": run.cfg.run.seed,
        "skipped_steps": run.skipped_steps,
        "skipped_files": len(run.data_info.skipped),
        "output": str(run.folder),
    }
    for key in ("ema_top1", "ema_top5", "ema_loss"):
        if key in final:
            summary[key] = final[key]
    if message:
        summary["message"] = message
    return summary


def _resume_command(run: Run) -> str:
    """What continues this run: the command line (or, for the caller's own model, the Python call)."""
    if run.custom_model:
        return f"train(cfg, LaunchOptions(output={str(run.folder)!r}, resume='auto'), model, datasets)"
    command = f"bridgeattn train --output {shlex.quote(str(run.folder))} --resume auto"
    if run.dist.world_size > 1 and os.environ.get(LOCK_ENV):
        command += f" --nproc {run.dist.world_size}"
    elif run.dist.world_size > 1:
        command = f"torchrun --nproc-per-node {os.environ.get('LOCAL_WORLD_SIZE', run.dist.world_size)} -m {command}"
    return command


def _interrupted(run: Run, signal_name: str, checkpoint: Path | None, message: str) -> TrainingInterrupted:
    """Write summary.json with status "interrupted" and how to continue; the exception to raise."""
    command = _resume_command(run)
    where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
    text = f"{message}; {where}; continue with: {command}"
    if run.dist.is_main:
        final = run.history[-1] if run.history else {}
        summary = _summary(run, final, status="interrupted", message=text)
        summary.update(signal=signal_name, resume_command=command,
                       checkpoint=str(checkpoint) if checkpoint else None)
        write_json(run.folder / "summary.json", summary)
    return TrainingInterrupted(text, signal_name, command, str(checkpoint) if checkpoint else None)


def _stop_mid_epoch(run: Run, epoch: int, stopped: dict[str, Any]) -> TrainingInterrupted:
    """Checkpoint the exact position a signal stopped the run at; the exception to raise."""
    state = _checkpoint_state(run, epoch, stopped)  # collective
    path = None
    if run.dist.is_main:
        good = ckpt.finite_state(state["model"], state.get("ema"))
        path = ckpt.save_checkpoint(state, run.folder, is_best=False, keep=run.cfg.run.keep, good=good)
    del state
    distributed.barrier()
    name = run.stop.signal_name or "a signal on another rank"
    batches = run.updates_per_epoch * run.cfg.optim.grad_accum
    return _interrupted(run, name, path, f"stopped by {name} after step {run.step} (epoch {epoch + 1}, "
                                        f"batch {stopped['stopped_at']}/{batches})")


def _fit(run: Run) -> dict[str, Any]:
    cfg, main = run.cfg, run.dist.is_main
    epochs = cfg.optim.epochs
    if main:
        global_batch = cfg.optim.batch_size * cfg.optim.grad_accum * run.dist.world_size
        log.info(f"training {cfg.model.name} ({run.params:,} params) on {run.data_info.name}, "
              f"{run.data_info.describe_input()}: {epochs} epochs x "
              f"{run.updates_per_epoch} steps, global batch {global_batch}"
              f", {run.dist.world_size} process(es) on {run.device}; run folder {run.folder}")
    final: dict[str, Any] = {}
    for epoch in range(run.start_epoch, cfg.optim.epochs):
        run.sampler.set_epoch(epoch)
        seed_everything(cfg.run.seed, run.dist.rank, epoch)
        partial, run.partial = run.partial, None
        stats = train_one_epoch(run, epoch, partial)
        if "stopped_at" in stats:
            raise _stop_mid_epoch(run, epoch, stats)
        run.train_time_s += stats["epoch_time_s"]
        final = _evaluate(run)
        record = {"epoch": epoch + 1, "step": run.step, **stats, "lr": _lr(run),
                  **{k: v for k, v in final.items() if k not in ("per_class", "confusion", "count")},
                  "val_samples": final["count"],
                  "train_img_per_s": stats["train_samples"] / max(stats["epoch_time_s"], 1e-9)}
        run.history.append(record)
        state = _checkpoint_state(run, epoch)  # collective (RNG states of all ranks)
        # best and "last good" only for finite weights, buffers (BatchNorm statistics) and validation loss
        good = ckpt.is_good(state, final["loss"])
        is_best = good and final["top1"] > run.best_top1
        if is_best:
            run.best_top1, run.best_epoch = final["top1"], epoch + 1
            state.update(best_top1=run.best_top1, best_epoch=run.best_epoch)
        if main:
            ckpt.save_checkpoint(state, run.folder, is_best=is_best, keep=cfg.run.keep, good=good)
            run.recorder.write_history(run.history)
            log.info(f"epoch {epoch + 1}/{epochs}  train loss {stats['train_loss']:.4f}  val top1 {final['top1']:.2f}"
                  f"  top5 {final['top5']:.2f}  loss {final['loss']:.4f}  lr {record['lr']:.2e}"
                  f"  {record['train_img_per_s']:.0f} img/s  {stats['epoch_time_s']:.1f}s")
        del state
        distributed.barrier()
    if not final:  # resumed a finished run: evaluate its weights once for the report
        final = _evaluate(run)
    summary = _summary(run, final)
    if main:
        report = write_eval_report(final, run.data_info.class_names, run.folder, plots=cfg.run.plots,
                                   title=f"{cfg.model.name}: top-1 {final['top1']:.2f} %")
        summary.update({k: report[k] for k in report})
        if cfg.run.plots:
            summary["curves"] = str(run.folder / "curves.png")
        summary["checkpoint"] = str(run.folder / ckpt.CKPT_DIR / "last.pth")
        summary["per_class_top1"] = final["per_class"]
        write_json(run.folder / "summary.json", summary)
    return summary


def train(cfg: TrainConfig, options: LaunchOptions | None = None, model: nn.Module | None = None,
          datasets: tuple[Dataset, Dataset] | None = None,
          on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train and write the run folder; returns the summary (see summary.json).

    ``options`` says where the run goes and whether it resumes (``LaunchOptions(output=..., resume="auto")``);
    it is not stored with the run. Without ``model`` and ``datasets`` it builds ``cfg.model`` and ``cfg.data``.
    With them it trains the caller's ``nn.Module`` on ``(train, val)`` datasets yielding
    ``(float (C, H, W) tensor, int label)`` with everything the engine offers (checkpoints, resume, DDP under
    torchrun, metrics, plots); the number of classes comes from a ``classes`` attribute of the training set, else
    from the model's output. ``on_step(step)`` is called on every rank after each optimizer step.

    Works in one process or under torchrun (one process per device). Raises ``UserError`` for bad options or
    data, ``TrainingStopped`` for a non-finite loss beyond ``cfg.run.skip_nonfinite`` and ``TrainingInterrupted``
    (a ``KeyboardInterrupt``) after SIGTERM, SIGUSR1 or Ctrl-C, once the position is checkpointed.
    """
    cfg.validate()
    options = (options or LaunchOptions()).validate()
    if model is None:  # the registry model fits the asked input size and arguments, before any file is written
        check_model_input(cfg.model.name, cfg.data.img_size, cfg.data.in_chans, **cfg.model.kwargs)
    info = distributed.setup(cfg.run.device)
    run = None
    try:
        with contextlib.ExitStack() as stack:  # holds the run folder's lock until the run ends
            stack.enter_context(deterministic_algorithms(cfg.run.deterministic))
            stop = stack.enter_context(StopRequest())
            run = _setup(cfg, options, info, stack, model, datasets)
            run.stop, run.on_step = stop, on_step
            try:
                return _fit(run)
            except TrainingStopped as exc:
                if info.is_main:
                    final = run.history[-1] if run.history else {}
                    write_json(run.folder / "summary.json", _summary(run, final, status="stopped", message=str(exc)))
                raise
            except TrainingInterrupted:
                raise
            except KeyboardInterrupt as exc:  # a second Ctrl-C: stop now, the last checkpoint stays
                last = ckpt.find_resume(run.folder) if info.is_main else None
                raise _interrupted(run, "SIGINT", last, "interrupted") from exc
            finally:
                run.vote.close()
                if run.recorder is not None:
                    run.recorder.close()
    finally:
        distributed.cleanup()
