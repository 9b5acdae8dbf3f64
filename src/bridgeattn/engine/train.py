"""``train(cfg)``: data -> model -> timm optimizer and per-step schedule -> epochs (``loop.train_one_epoch``) ->
exact DDP evaluation -> atomic checkpoint -> metrics, plots.

Every epoch reseeds from ``(seed, rank, epoch)``, and a stop mid-epoch stores the position and RNG states, so a
resumed run is bit-identical to an uninterrupted one (docs/training.md, "Checkpoints and resuming").
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from .. import data as data_module
from ..config import REMOTE_KWARGS, LaunchOptions, TrainConfig, make_config
from ..data.shards import ShardSet, shard_loader
from ..errors import UserError
from ..files import write_json, write_text
from ..layers.freeze import freeze_bn
from ..models.checks import check_model_input
from ..models.registry import create_model
from ..weights import checkpoint as ckpt
from ..weights.safe_load import load_state_dict_strict
from . import distributed
from .evaluate import evaluate
from .finetune import init_from, optimizer_params
from .hardware import amp_dtype_for, numerics_report
from .interrupt import StopRequest, TrainingInterrupted
from .loop import PROGRESS, Run, TrainingStopped, train_one_epoch
from .records import RunRecorder, check_stored_config, holds_run, write_eval_report
from .runlock import LOCK_ENV, RunLock, refuse_other_files

# Options that define the learning-rate schedule; a resume that changes them rebuilds the schedule.
_SCHEDULE_FIELDS = ("sched", "epochs", "warmup_epochs", "warmup_prefix", "warmup_lr", "min_lr", "lr", "batch_size",
                    "grad_accum")

log = logging.getLogger(__name__)


def seed_everything(seed: int, *salt: int) -> None:
    """Seed Python, NumPy and torch from ``(seed, *salt)`` (e.g. rank and epoch), independent of history."""
    a, b = np.random.SeedSequence([seed, *salt]).generate_state(2)
    random.seed(int(a))
    np.random.seed(int(b))
    torch.manual_seed(int(a) << 32 | int(b))


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """cuDNN and torch's algorithm choice for one run (deterministic, or cuDNN's autotuner), restored afterwards."""
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


# ---------------------------------------------------------------------------------------------------- set-up

def _claim_folder(options: LaunchOptions, folder: Path, stack: contextlib.ExitStack) -> Path | None:
    """Rank 0: lock the run folder, check it may be (re)used, clear a killed writer's temp files; the checkpoint to
    resume from."""
    resume = options.resume
    if resume is None and distributed.restart_count() > 0:
        resume = "auto"  # torchrun restarted the job after a failure: continue from the last checkpoint
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--output {folder} is a file, not a folder")
    stack.enter_context(RunLock(folder))  # before any check, so two runs cannot both pass them
    if holds_run(folder):
        if resume is None:
            raise UserError(f"{folder} already holds a run; continue it with --resume auto, or choose another --output")
        check_stored_config(folder)
    elif not options.overwrite:
        refuse_other_files(folder)
    ckpt.clean_temps(folder)
    if resume == "auto":
        return ckpt.find_resume(folder)
    return Path(resume) if resume is not None else None


def _run_folder(cfg: TrainConfig, options: LaunchOptions, info: distributed.DistInfo,
                stack: contextlib.ExitStack) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from, both rank 0's; refuses an occupied folder."""
    folder = options.output or Path("runs") / f"{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    path, problem = None, None
    if info.is_main:
        try:
            path = _claim_folder(options, Path(folder), stack)
        except UserError as exc:
            problem = str(exc)
    # every rank takes rank 0's answer (entry [0] of the gather), so every rank raises the same error instead of
    # the others waiting for rank 0 forever
    folder, path, problem = distributed.all_gather_object((str(folder), str(path) if path else None, problem))[0]
    if problem:
        raise UserError(problem)
    return Path(folder), Path(path) if path else None


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
    if names is None:  # class names 0 .. n-1
        if model is not None:
            model.eval()
            with torch.no_grad():  # the number of outputs of the caller's model
                names = range(model(image.unsqueeze(0).to(next(model.parameters()).device)).shape[-1])
        elif isinstance(train_set, torch.utils.data.TensorDataset):
            names = range(int(train_set.tensors[1].max()) + 1)
        else:
            raise UserError("cannot tell the number of classes: pass a model, or give the dataset a `classes` list")
    return data_module.DataInfo(name="custom", num_classes=len(names), in_chans=image.shape[0],
                                img_size=image.shape[-1], class_names=[str(c) for c in names], mean=(), std=())


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
    o, seed, rank, world = cfg.optim, cfg.run.seed, info.rank, info.world_size
    if len(train_set) < o.batch_size * o.grad_accum * world:
        raise UserError(f"the training set has {len(train_set)} samples, fewer than one optimizer step needs "
                        f"({o.batch_size} x {o.grad_accum} accumulation x {world} processes); lower "
                        "--batch-size or --grad-accum, or raise --train-subset")
    options, val_batch = data_module.loader_options(cfg.run.workers, info.device), o.val_batch_size or 2 * o.batch_size
    if isinstance(train_set, ShardSet):  # streamed: the data set itself splits each epoch over ranks and workers
        train_loader = shard_loader(train_set, o.batch_size, rank, world, True, seed, options)
        val_loader = shard_loader(val_set, val_batch, rank, world, False, seed, options)
        return train_loader, val_loader, train_loader.dataset, data_info
    # persistent workers keep their random state across epochs, so each sample's augmentation is seeded from
    # (seed, epoch, index) instead: the same for a resumed run, whatever the worker that draws it
    sampler = distributed.ResumableSampler(train_set, world, rank, shuffle=True, seed=seed, keyed=cfg.run.workers > 0)
    if sampler.keyed:
        train_set = EpochSeeded(train_set, seed)
    train_loader = DataLoader(train_set, batch_size=o.batch_size, sampler=sampler, drop_last=True, **options)
    # every sample evaluated once: DistributedSampler would pad the last shard with repeats
    val_loader = DataLoader(val_set, batch_size=val_batch, sampler=range(rank, len(val_set), world), **options)
    return train_loader, val_loader, sampler, data_info


def _build_model(cfg: TrainConfig, data_info, device: torch.device, unsafe: bool = False,
                 model: nn.Module | None = None, resuming: bool = False) -> tuple[nn.Module, dict[str, Any] | None]:
    """The model on its device, and what ``--init-from`` loaded into it (None without it)."""
    if model is None:
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank and for every model run with this seed
        # a resumed run takes its weights from the checkpoint: nothing read back from the run folder downloads
        kwargs = {k: v for k, v in cfg.model.kwargs.items() if not (resuming and k in REMOTE_KWARGS)}
        try:
            model = create_model(cfg.model.name, num_classes=data_info.num_classes, in_chans=data_info.in_chans,
                                 **kwargs)
        except TypeError as exc:
            raise UserError(f"--model-kwargs {cfg.model.kwargs} not accepted by {cfg.model.name}: {exc}") from None
    report = None
    if cfg.model.init_from and not resuming:
        report = init_from(model, cfg.model.init_from, unsafe)
    if cfg.run.freeze_bn:
        model = freeze_bn(model)
    model.to(device, memory_format=torch.channels_last if cfg.run.channels_last else torch.preserve_format)
    return model, report


def _build_optimization(cfg: TrainConfig, model: nn.Module, updates_per_epoch: int):
    o = cfg.optim
    extra: dict[str, Any] = {"eps": o.opt_eps} if o.opt_eps is not None else {}
    if o.opt_betas:
        extra["betas"] = tuple(o.opt_betas)
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


def _restore(run: Run, state: dict[str, Any]) -> None:
    """Load a checkpoint into the run: weights, optimizer, schedule, scaler, EMA, counters, history, RNG."""
    cfg, path, stored = run.cfg, state["path"], state["config"]
    if run.custom_model:
        kind, written, wanted = "model class", state.get("model_class"), _model_class(run.model)
    else:
        kind, written, wanted = "model", stored.get("model"), cfg.model.name
    if written != wanted:
        raise UserError(f"checkpoint {path} is for {kind} {written!r}, not {wanted!r}")
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
        run.ema.module.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
    run.start_epoch = int(state["epoch"])
    for key in PROGRESS:  # older checkpoints lack newer keys: the fresh run's values stand
        setattr(run, key, state.get(key, getattr(run, key)))
    rng = state.get("rng") or []
    batch = int(state.get("batch", 0))
    if batch:  # stopped mid-epoch: continue with the remaining batches, as each rank left them
        if len(rng) != run.dist.world_size or stored.get("batch_size") != cfg.optim.batch_size:
            raise UserError(f"checkpoint {path} was written mid-epoch by {len(rng)} process(es) with --batch-size "
                            f"{stored.get('batch_size')}; resume it with the same (it holds their data positions)")
        partial = state["partial"]
        run.partial = {"batch": batch, "rng": rng[run.dist.rank], "sums": partial["sums"][run.dist.rank],
                       "seconds": float(partial["seconds"]), "lr_curve": partial.get("lr_curve", [])}
    elif len(rng) == run.dist.world_size:
        ckpt.set_rng_state(rng[run.dist.rank])
    if run.scheduler is not None:
        run.scheduler.step_update(num_updates=run.step)
    if run.dist.is_main:
        # a resume from further back must not overwrite (nor prune) the checkpoints after it
        moved = ckpt.set_aside_newer(run.folder, run.start_epoch, batch)
        if moved:
            log.info(f"moved {len(moved)} checkpoint(s) newer than {Path(path).name} to "
                     f"{run.folder / ckpt.CKPT_DIR / 'superseded'}")
        where = f"epoch {run.start_epoch}" + (f", batch {batch} of epoch {run.start_epoch + 1}" if batch else "")
        log.info(f"resumed from {path} ({where}, step {run.step})")


def _model_class(model: nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def _setup(cfg: TrainConfig, options: LaunchOptions, info: distributed.DistInfo, stack: contextlib.ExitStack,
           user_model: nn.Module | None = None, datasets: tuple[Dataset, Dataset] | None = None) -> Run:
    if user_model is None and not timm.is_model(cfg.model.name):  # fail before any data is read
        create_model(cfg.model.name)  # raises UserError naming similar models
    folder, resume_path = _run_folder(cfg, options, info, stack)
    distributed.barrier()  # every rank has checked the folder before rank 0 writes into it
    state = ckpt.load_checkpoint(resume_path, unsafe=options.unsafe_load) if resume_path is not None else None
    recorded = (state or {}).get("preprocessing")
    if datasets is None and isinstance(recorded, dict) and recorded.get("input_size"):
        # a resumed run trains at the input shape its checkpoint recorded: a folder's own shape is sampled from its
        # images, which may have changed, and runs of earlier versions left it unset in config.yaml
        prep = data_module.Preprocessing.from_dict(recorded)
        cfg.data.img_size, cfg.data.in_chans = cfg.data.img_size or prep.img_size, cfg.data.in_chans or prep.in_chans
    train_loader, val_loader, sampler, data_info = _build_data(cfg, info, datasets, user_model)
    if datasets is None:  # config.yaml records the shape the run trains at, whatever decided it
        cfg.data.img_size, cfg.data.in_chans = data_info.img_size, data_info.in_chans
    model, report = _build_model(cfg, data_info, info.device, options.unsafe_load, user_model,
                                 resuming=state is not None)
    if cfg.run.sync_bn:
        if info.device.type != "cuda":
            raise UserError("--sync-bn needs CUDA devices; drop --sync-bn on CPU")
        if info.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    updates_per_epoch = len(train_loader) // cfg.optim.grad_accum
    optimizer, scheduler = _build_optimization(cfg, model, updates_per_epoch)
    o = cfg.optim
    amp_dtype = amp_dtype_for(cfg.run.amp, info.device, cfg.run.amp_dtype)
    scaler = torch.amp.GradScaler(info.device.type, enabled=amp_dtype == torch.float16)
    ema = ModelEmaV3(model, decay=o.ema_decay) if o.ema else None
    mixup = None
    criterion: nn.Module = LabelSmoothingCrossEntropy(o.smoothing) if o.smoothing > 0 else nn.CrossEntropyLoss()
    if o.mixup > 0 or o.cutmix > 0:  # Mixup makes soft targets, with the label smoothing in them
        mixup = Mixup(mixup_alpha=o.mixup, cutmix_alpha=o.cutmix, prob=o.mixup_prob, switch_prob=o.mixup_switch_prob,
                      mode=o.mixup_mode, label_smoothing=o.smoothing, num_classes=data_info.num_classes)
        criterion = SoftTargetCrossEntropy()
    net: nn.Module = model
    if info.world_size > 1:
        # broadcast_buffers: every forward starts from rank 0's BatchNorm statistics, as in timm's train.py
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                                      broadcast_buffers=True)
    run = Run(cfg, options, info, folder, model, net, train_loader, val_loader, sampler, data_info, optimizer,
              scheduler, scaler, criterion, mixup, ema, amp_dtype, updates_per_epoch,
              custom_model=user_model is not None, init_from=report)
    if state is not None:
        _restore(run, state)
    elif options.resume == "auto" and info.is_main and (folder / ckpt.CKPT_DIR).is_dir():
        log.info(f"no usable checkpoint in {folder}; starting from scratch")
    if info.is_main:
        run.recorder = RunRecorder(folder, cfg, run.start_epoch)
        if data_info.skipped:
            write_text(folder / "skipped_files.txt", "\n".join(data_info.skipped) + "\n")
            log.info(f"data: skipped {len(data_info.skipped)} unreadable files (list in {folder}/skipped_files.txt)")
    return run


# ------------------------------------------------------------------------------------------- epochs and records

def _evaluate(run: Run) -> dict[str, Any]:
    """Validation metrics of the model (and its EMA: ``ema_top1`` ...), with rank 0's BatchNorm statistics."""
    metrics: dict[str, Any] = {}
    for prefix, model in [("", run.model)] + ([("ema_", run.ema.module)] if run.ema is not None else []):
        if distributed.active():
            distribute_bn(model, run.dist.world_size)
        result = evaluate(model, run.val_loader, device=run.dist.device, num_classes=run.data_info.num_classes,
                          amp_dtype=run.amp_dtype, channels_last=run.cfg.run.channels_last)
        metrics.update(result if not prefix else {prefix + k: result[k] for k in ("top1", "top5", "loss")})
    return metrics


def _checkpoint_state(run: Run, epoch: int, stopped: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state after ``epoch`` (0-based), or ``stopped`` part-way through it (collective: every rank's RNG)."""
    rng = distributed.all_gather_object(ckpt.rng_state())  # every rank's generators
    position: dict[str, Any] = {"epoch": epoch + 1, "batch": 0}
    if stopped is not None:
        position = {"epoch": epoch, "batch": stopped["stopped_at"],
                    "partial": {"sums": distributed.all_gather_object(stopped["sums"]),
                                "seconds": stopped["epoch_time_s"], "lr_curve": stopped["lr_curve"]}}
    return {
        "format": "bridgeattn-train-checkpoint/1", "model_class": _model_class(run.model), "config": run.cfg.to_dict(),
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "ema": run.ema.module.state_dict() if run.ema is not None else None,
        **position, "rng": rng, **{key: getattr(run, key) for key in PROGRESS},
        "num_classes": run.data_info.num_classes, "in_chans": run.data_info.in_chans,
        "class_names": list(run.data_info.class_names),
        # what evaluation does to an image, so the weights can be used without the data set
        "preprocessing": data_module.eval_preprocessing(run.cfg.data, run.data_info).to_dict(),
    }


def _summary(run: Run, final: dict[str, Any], status: str = "finished", **extra: Any) -> dict[str, Any]:
    """summary.json's fields: ``status``, the results of validation ``final``, the run's progress and set-up."""
    samples = sum(r.get("train_samples", 0) for r in run.history)
    epoch_time = sum(r.get("epoch_time_s", 0.0) for r in run.history)
    summary: dict[str, Any] = {
        "status": status, "model": _model_class(run.model) if run.custom_model else run.cfg.model.name,
        "data": run.data_info.name if run.data_info.name == "custom" else run.cfg.data.spec,
        **{key: final.get(key) for key in ("top1", "top5", "loss")},
        **{key: final[key] for key in ("ema_top1", "ema_top5", "ema_loss") if key in final},
        "best_top1": run.best_top1 if run.best_epoch else None,  # None: no epoch with finite results
        "best_epoch": run.best_epoch, "epochs": len(run.history), "steps": run.step,
        "train_time_s": run.train_time_s, "train_img_per_s": samples / epoch_time if epoch_time else None,
        "params": run.params, "num_classes": run.data_info.num_classes, "world_size": run.dist.world_size,
        "global_batch": run.global_batch, "device": str(run.dist.device), "seed": run.cfg.run.seed,
        "skipped_steps": run.skipped_steps, "skipped_files": len(run.data_info.skipped), "output": str(run.folder),
        **extra,
    }
    if run.init_from:
        summary["init_from"] = run.init_from
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


def _write_summary(run: Run, status: str, **extra: Any) -> None:
    """summary.json of a run that did not finish: its last epoch's results, ``status`` and why (rank 0)."""
    if run.dist.is_main:
        write_json(run.folder / "summary.json", _summary(run, run.history[-1] if run.history else {}, status, **extra))


def _interrupted(run: Run, signal_name: str, checkpoint: Path | None, message: str) -> TrainingInterrupted:
    """Write summary.json with status "interrupted" and how to continue; the exception to raise."""
    command = _resume_command(run)
    path = str(checkpoint) if checkpoint else None
    text = f"{message}; {f'checkpoint {path}' if path else 'no checkpoint yet'}; continue with: {command}"
    _write_summary(run, "interrupted", message=text, signal=signal_name, resume_command=command, checkpoint=path)
    return TrainingInterrupted(text, signal_name, command, path)


def _save_checkpoint(run: Run, epoch: int, stopped: dict[str, Any] | None = None,
                     final: dict[str, Any] | None = None) -> Path | None:
    """Checkpoint after ``epoch`` (0-based) with its validation ``final``, or ``stopped`` part-way through it; the
    path on rank 0. Collective. Best and "last good" only for finite weights, buffers and validation loss."""
    state = _checkpoint_state(run, epoch, stopped)
    good = ckpt.is_good(state, final["loss"] if final else None)
    is_best = final is not None and good and final["top1"] > run.best_top1
    if is_best:
        run.best_top1, run.best_epoch = final["top1"], epoch + 1
        state.update(best_top1=run.best_top1, best_epoch=run.best_epoch)
    if not run.dist.is_main:
        return None
    return ckpt.save_checkpoint(state, run.folder, is_best=is_best, keep=run.cfg.run.keep, good=good)


def _stop_mid_epoch(run: Run, epoch: int, stopped: dict[str, Any]) -> TrainingInterrupted:
    """Checkpoint the exact position a signal stopped the run at; the exception to raise."""
    path = _save_checkpoint(run, epoch, stopped)
    distributed.barrier()
    name = run.stop.signal_name or "a signal on another rank"
    batches = run.updates_per_epoch * run.cfg.optim.grad_accum
    return _interrupted(run, name, path, f"stopped by {name} after step {run.step} (epoch {epoch + 1}, "
                                        f"batch {stopped['stopped_at']}/{batches})")


def _fit(run: Run) -> dict[str, Any]:
    cfg, main = run.cfg, run.dist.is_main
    epochs = cfg.optim.epochs
    if main:
        log.info(numerics_report(cfg.run.amp, cfg.run.amp_dtype, run.amp_dtype, cfg.run.channels_last, run.dist.device))
        log.info(f"training {cfg.model.name} ({run.params:,} params) on {run.data_info.name}, "
                 f"{run.data_info.describe_input()}: {epochs} epochs x {run.updates_per_epoch} steps, global batch "
                 f"{run.global_batch}, {run.dist.world_size} process(es) on {run.dist.device}; run folder {run.folder}")
    final: dict[str, Any] = {}
    if run.init_from is not None and run.step == 0:  # where --init-from starts: scored before any step
        start = _evaluate(run)
        run.init_from.update({f"step0_{k}": start[k] for k in ("top1", "top5", "loss")})
        if main:
            log.info(f"step 0 (--init-from): val top1 {start['top1']:.2f}  top5 {start['top5']:.2f}"
                     f"  loss {start['loss']:.4f}")
    for epoch in range(run.start_epoch, epochs):
        run.sampler.set_epoch(epoch)
        seed_everything(cfg.run.seed, run.dist.rank, epoch)
        partial, run.partial = run.partial, None
        stats = train_one_epoch(run, epoch, partial)
        if "stopped_at" in stats:
            raise _stop_mid_epoch(run, epoch, stats)
        run.train_time_s += stats["epoch_time_s"]
        final = _evaluate(run)
        record = {"epoch": epoch + 1, "step": run.step, **stats, "lr": run.lr(),
                  **{k: v for k, v in final.items() if k not in ("per_class", "confusion", "count")},
                  "val_samples": final["count"],
                  "train_img_per_s": stats["train_samples"] / max(stats["epoch_time_s"], 1e-9)}
        run.history.append(record)
        _save_checkpoint(run, epoch, final=final)
        if main:
            run.recorder.write_history(run.history)
            log.info(f"epoch {epoch + 1}/{epochs}  train loss {stats['train_loss']:.4f}  val top1 {final['top1']:.2f}"
                     f"  top5 {final['top5']:.2f}  loss {final['loss']:.4f}  lr {record['lr']:.2e}"
                     f"  {record['train_img_per_s']:.0f} img/s  {stats['epoch_time_s']:.1f}s")
        distributed.barrier()
    if not final:  # resumed a finished run: evaluate its weights once for the report
        final = _evaluate(run)
    summary = _summary(run, final)
    if main:
        summary.update(write_eval_report(final, run.data_info.class_names, run.folder, plots=cfg.run.plots,
                                         title=f"{cfg.model.name}: top-1 {final['top1']:.2f} %"))
        if cfg.run.plots:
            summary["curves"] = str(run.folder / "curves.png")
        summary.update(checkpoint=str(run.folder / ckpt.CKPT_DIR / "last.pth"), per_class_top1=final["per_class"])
        write_json(run.folder / "summary.json", summary)
    return summary


def train(cfg: TrainConfig, options: LaunchOptions | None = None, model: nn.Module | None = None,
          datasets: tuple[Dataset, Dataset] | None = None) -> dict[str, Any]:
    """Train in one process or under torchrun and write the run folder; returns the summary (see summary.json).

    ``options`` (not stored with the run): where it goes and whether it resumes. ``model`` and ``datasets``: the
    caller's ``nn.Module`` and ``(train, val)`` datasets of ``((C, H, W) tensor, label)`` instead of ``cfg.model``
    and ``cfg.data`` (classes from the training set's ``classes``, else the model's output). Raises ``UserError``,
    ``TrainingStopped`` (non-finite loss) and ``TrainingInterrupted`` (SIGTERM, SIGUSR1, Ctrl-C; checkpointed).
    """
    cfg.validate()
    options = (options or LaunchOptions()).validate()
    if model is None:  # the registry model fits the asked input size and arguments, before any file is written
        check_model_input(cfg.model.name, cfg.data.img_size, cfg.data.in_chans, **cfg.model.kwargs)
    info = distributed.setup(cfg.run.device)
    try:
        with contextlib.ExitStack() as stack:  # holds the run folder's lock until the run ends
            stack.enter_context(deterministic_algorithms(cfg.run.deterministic))
            stop = stack.enter_context(StopRequest())
            run = _setup(cfg, options, info, stack, model, datasets)
            run.stop = stop
            try:
                return _fit(run)
            except TrainingInterrupted:
                raise
            except (TrainingStopped, UserError) as exc:  # a non-finite loss, a full disk ...: say so in the folder
                try:
                    _write_summary(run, "stopped" if isinstance(exc, TrainingStopped) else "failed", message=str(exc))
                except OSError as err:
                    log.warning(f"cannot write {run.folder / 'summary.json'} either: {err.strerror or err}")
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
