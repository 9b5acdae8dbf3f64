"""``train_one_epoch`` and its parts: the run's state, where an epoch (re)starts, the optimizer step, the
non-finite guard and the epoch's statistics, read on the host once per window of steps."""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import LaunchOptions, TrainConfig
from ..weights import checkpoint as ckpt
from . import distributed
from .hardware import autocast
from .interrupt import StopRequest
from .records import RunRecorder

log = logging.getLogger(__name__)

# Host reads of the loss and the non-finite vote: every this many optimizer steps and at the end of an epoch.
SYNC_EVERY = 10
# The fields of ``Run`` that say how far it got, stored in every checkpoint under the same names.
PROGRESS = ("step", "skipped_steps", "best_top1", "best_epoch", "train_time_s", "history", "init_from")
# Points of the learning-rate curve recorded per epoch (at most): enough to show the warm-up and the peak.
LR_POINTS = 32


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (a non-finite loss); the last good checkpoint is left in place."""


@dataclass
class Run:
    """What a training run is built from (fixed after set-up) and how far it got (``step`` ... ``partial``)."""

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
    custom_model: bool = False  # the caller's nn.Module rather than cfg.model from the registry
    recorder: RunRecorder | None = None
    stop: StopRequest = field(default_factory=StopRequest)
    vote: distributed.StopVote = field(default_factory=distributed.StopVote)
    start_epoch: int = 0
    partial: dict[str, Any] | None = None  # where a run stopped mid-epoch resumes: batch, sums, seconds, RNG
    # how far it got (PROGRESS)
    step: int = 0
    skipped_steps: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    train_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    init_from: dict[str, Any] | None = None  # what --init-from loaded, how, and its step-0 validation

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def global_batch(self) -> int:
        return self.cfg.optim.batch_size * self.cfg.optim.grad_accum * self.dist.world_size

    def lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)


def resume_position(run: Run, partial: dict[str, Any] | None) -> tuple[int, Iterator]:
    """Batches of this epoch already done, and the loader positioned at the next one with the RNG states as a stopped
    run left them."""
    done = partial["batch"] if partial is not None else 0
    resumable = isinstance(run.sampler, distributed.ResumableSampler)
    if resumable:  # set every epoch: 0, or this rank's samples already trained on
        run.sampler.start = done * run.cfg.optim.batch_size
    loader = iter(run.train_loader)  # draws the loader's base seed as the uninterrupted epoch did
    if not resumable:
        for _ in range(done):  # a stream cannot start part-way: read past the batches already trained on
            next(loader)
    if partial is not None:
        ckpt.set_rng_state(partial["rng"])  # the generators exactly as they were when the run stopped
    return done, loader


def to_device(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the run's device in its memory format, with Mixup/CutMix applied: ``(images, targets)``."""
    images, labels = images.to(run.dist.device, non_blocking=True), labels.to(run.dist.device, non_blocking=True)
    if run.cfg.run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return run.mixup(images, labels) if run.mixup is not None else (images, labels)


def optimizer_step(run: Run, params: list[nn.Parameter]) -> torch.Tensor | None:
    """Clip, step, update the scaler and EMA; with ``skip_nonfinite`` skip a step whose gradient norm is not finite
    and return that device-side flag (0-dim bool), else None. Fused optimizers and the fp16 scaler take the flag on
    the device; others read it (zeroing the gradients would still apply weight decay and momentum)."""
    cfg, optimizer, scaler = run.cfg, run.optimizer, run.scaler
    skip = cfg.run.skip_nonfinite > 0
    if cfg.optim.clip_grad or skip:
        scaler.unscale_(optimizer)  # a no-op without fp16 scaling
    if cfg.optim.clip_grad:
        norm = nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
    elif skip:
        norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    found = ~torch.isfinite(norm) if skip else None
    stepped = True
    if found is None or scaler.is_enabled():
        scaler.step(optimizer)  # the fp16 scaler skips non-finite steps itself
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = found.float()  # fused optimizers skip the update on the device
        optimizer.step()
        del optimizer.found_inf
    else:
        stepped = not found.item()
        if stepped:
            optimizer.step()
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if run.ema is not None and stepped:
        run.ema.update(run.model, step=run.step)
    return found


class NonFiniteGuard:
    """With ``skip_nonfinite``, a micro-batch whose loss is not finite changes nothing: its loss poisons the
    gradients (so DDP's own all-reduce tells every rank to skip the step) and its BatchNorm statistics are undone."""

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        self.enabled = enabled
        self.buffers = list(model.buffers()) if enabled else []
        self.finite = torch.tensor(True)

    @contextlib.contextmanager
    def protect(self) -> Iterator[None]:
        saved = [b.detach().clone() for b in self.buffers]
        yield
        for buf, old in zip(self.buffers, saved):  # after backward, which may still need the buffers
            buf.copy_(torch.where(self.finite, buf, old))

    def poison(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return loss
        self.finite = torch.isfinite(loss.detach())
        return loss * torch.where(self.finite, 1.0, math.nan)  # NaN gradients carry the vote to every rank


class EpochStats:
    """An epoch's statistics as it runs: its clock, progress bar and learning-rate curve, and the losses and
    "skipped" flags of its micro-batches, kept on the device and brought to the host every ``SYNC_EVERY`` optimizer
    steps and at the end (one collective, one read), so that no step waits for the device."""

    def __init__(self, run: Run, epoch: int, batches: int, done: int, partial: dict[str, Any] | None) -> None:
        self.run, self.epoch, self.batches, self.accum = run, epoch, batches, run.cfg.optim.grad_accum
        self.values = torch.zeros(2, SYNC_EVERY * self.accum, device=run.dist.device)  # loss x samples; skipped
        self.first, self.earlier_steps = done, run.step - done // self.accum  # the window's first micro-batch
        partial = partial or {}
        self.sums = tuple(partial.get("sums", (0.0, 0.0)))  # (loss x samples, samples) of the finite losses read
        self.lr_curve = list(partial.get("lr_curve", []))  # [epoch as a fraction, lr of that step]
        self.lr_every = max(1, run.updates_per_epoch // LR_POINTS)
        self.seconds, self.start = partial.get("seconds", 0.0), time.perf_counter()
        self.bar = tqdm(total=batches, initial=done, desc=f"epoch {epoch + 1}/{run.cfg.optim.epochs}", unit="batch",
                        dynamic_ncols=True, disable=not (run.options.progress and run.dist.is_main), leave=False)

    def add_loss(self, index: int, loss: torch.Tensor, samples: int) -> None:
        self.values[0, index - self.first] = loss.detach() * samples
        self.bar.update(1)

    def add_step(self, index: int, skipped: torch.Tensor | None) -> None:
        """Micro-batch ``index`` ended an optimizer step: record its lr and skipped flag; read a full window."""
        step = index // self.accum
        if step % self.lr_every == 0:
            self.lr_curve.append([self.epoch + step / self.run.updates_per_epoch, self.run.lr()])
        if skipped is not None:
            self.values[1, index - self.first] = skipped
        if (step + 1) % SYNC_EVERY == 0:
            self.read(index + 1)

    def close(self, stopped_at: int) -> dict[str, Any]:
        """Read what is left: mean loss, samples, seconds and the lr curve; or, stopped part-way (``stopped_at``
        batches done), the running sums in place of the mean."""
        end = stopped_at or self.batches
        if self.first < end:
            self.read(end)
        self.bar.close()
        loss_sum, seen = self.sums
        common = {"epoch_time_s": self.seconds + time.perf_counter() - self.start, "lr_curve": self.lr_curve}
        if stopped_at:
            return {"stopped_at": stopped_at, "sums": [loss_sum, seen], **common}
        return {"train_loss": loss_sum / max(seen, 1.0), "train_samples": int(seen), **common}

    def skip(self, what: str, step: int, batch: int) -> None:
        """Count a skipped step with a NaN/Inf loss or gradient; stop the run beyond ``skip_nonfinite`` of them."""
        run, allowed = self.run, self.run.cfg.run.skip_nonfinite
        run.skipped_steps += 1
        where = f"step {step} (epoch {self.epoch + 1}, batch {batch + 1}/{self.batches})"
        if run.skipped_steps > allowed:
            last = ckpt.find_resume(run.folder, good_only=True) if run.dist.is_main else None
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
            hint = (f"more than --skip-nonfinite {allowed} bad steps" if allowed
                    else "lower --lr, enable --clip-grad, or skip a few bad steps with --skip-nonfinite N")
            raise TrainingStopped(f"{what} at {where}; stopped ({hint}); {kept}")
        if run.dist.is_main:
            log.warning("warning: %s at %s: step skipped (%d/%d allowed)", what, where, run.skipped_steps, allowed)

    def read(self, end: int) -> None:
        """Add micro-batches ``first .. end - 1`` with a finite loss on every rank, one at a time (the same sums
        wherever windows start: a mid-epoch resume starts one); report bad steps and show the window on the bar."""
        used = end - self.first
        block = distributed.all_reduce_sum(self.values[:, :used].double())  # a NaN on any rank makes the sum NaN
        losses, skipped = block.tolist()
        self.values.zero_()
        samples = self.run.cfg.optim.batch_size * self.run.dist.world_size  # of a micro-batch, over all ranks
        loss_sum, seen = self.sums
        for start in range(0, used, self.accum):
            step_losses = losses[start:start + self.accum]
            bad = [i for i, value in enumerate(step_losses) if not math.isfinite(value)]
            index = self.first + start  # micro-batch index in the epoch
            step = self.earlier_steps + index // self.accum + 1
            if bad:
                self.skip(f"non-finite loss ({step_losses[bad[0]] / samples})", step, index + bad[0])
            elif skipped[start + self.accum - 1]:
                self.skip("non-finite gradient", step, index + self.accum - 1)
            for value in step_losses:
                if math.isfinite(value):
                    loss_sum += value
                    seen += samples
        self.bar.set_postfix(loss=f"{(loss_sum - self.sums[0]) / max(seen - self.sums[1], 1.0):.4f}",
                             lr=f"{self.run.lr():.2e}",
                             img_s=f"{seen / max(time.perf_counter() - self.start, 1e-9):.0f}")
        self.first, self.sums = end, (loss_sum, seen)


def train_one_epoch(run: Run, epoch: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """One pass over the training data (the rest of it after ``partial``, where a stopped run left it): mean loss,
    samples, seconds and lr curve, or ``stopped_at`` and the running sums when the ranks voted to stop on a signal. A
    non-finite loss stops the run at the next read, naming the first bad step, unless ``skip_nonfinite`` skips it."""
    net, accum = run.net, run.cfg.optim.grad_accum
    batches = run.updates_per_epoch * accum  # trailing batches that do not fill an optimizer step are left out
    done, loader = resume_position(run, partial)
    stats = EpochStats(run, epoch, batches, done, partial)
    guard = NonFiniteGuard(run.model, enabled=run.cfg.run.skip_nonfinite > 0)
    params = [p for p in run.model.parameters() if p.requires_grad]
    stopped_at = 0
    net.train()
    for index, (images, labels) in enumerate(itertools.islice(loader, batches - done), start=done):
        images, targets = to_device(run, images, labels)
        last_micro = (index + 1) % accum == 0
        # gradients are all-reduced only on the batch that completes an optimizer step
        sync = contextlib.nullcontext() if last_micro or run.dist.world_size == 1 else net.no_sync()
        with guard.protect(), sync:
            with autocast(run.dist.device, run.amp_dtype):
                loss = run.criterion(net(images), targets)
            stats.add_loss(index, loss, len(labels))
            run.scaler.scale(guard.poison(loss) / accum).backward()
        if last_micro:
            run.step += 1
            stats.add_step(index, optimizer_step(run, params))
            if run.scheduler is not None:
                run.scheduler.step_update(num_updates=run.step)
            if run.vote.poll(run.stop.requested):  # a signal: stop here, on every rank at the same step
                stopped_at = index + 1
                break
    del loader
    return stats.close(stopped_at)
