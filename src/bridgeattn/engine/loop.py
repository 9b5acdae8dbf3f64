"""``train_one_epoch`` and its parts: the run's state, where an epoch (re)starts, the optimizer step, the
non-finite guard and the host-sync window."""
from __future__ import annotations

import contextlib
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


def resume_position(run: Run, partial: dict[str, Any] | None) -> tuple[int, float, tuple[float, float], Iterator]:
    """Where this epoch starts: batches done, seconds taken, (loss x samples, samples) so far, and the loader
    positioned at the next batch, with the RNG states as a stopped run left them."""
    done, seconds, sums = 0, 0.0, (0.0, 0.0)
    if partial is not None:
        done, seconds, sums = partial["batch"], partial["seconds"], tuple(partial["sums"])
    resumable = isinstance(run.sampler, distributed.ResumableSampler)
    if resumable:  # set every epoch: 0, or this rank's samples already trained on
        run.sampler.start = done * run.cfg.optim.batch_size
    loader = iter(run.train_loader)  # draws the loader's base seed as the uninterrupted epoch did
    if not resumable:
        for _ in range(done):  # a stream cannot start part-way: read past the batches already trained on
            next(loader)
    if partial is not None:
        ckpt.set_rng_state(partial["rng"])  # the generators exactly as they were when the run stopped
    return done, seconds, sums, loader


def to_device(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the run's device in its memory format, with Mixup/CutMix applied: ``(images, targets)``."""
    images, labels = images.to(run.dist.device, non_blocking=True), labels.to(run.dist.device, non_blocking=True)
    if run.cfg.run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return run.mixup(images, labels) if run.mixup is not None else (images, labels)


def optimizer_step(run: Run, params: list[nn.Parameter]) -> torch.Tensor | None:
    """Clip, step, update the scaler and EMA; with ``skip_nonfinite`` skip a step whose gradient norm is not finite
    and return that device-side flag (0-dim bool), else None. Fused optimizers and the fp16 scaler take the flag on
    the device; others read it once per step (zeroing the gradients would still apply weight decay and momentum).
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


class LossWindow:
    """Per-micro-batch losses and "skipped" flags kept on the device, brought to the host every ``SYNC_EVERY``
    optimizer steps and at the end of an epoch (one collective, one read), so no step waits for the device; the
    progress bar shows what was read."""

    def __init__(self, run: Run, epoch: int, batches: int, done: int, sums: tuple[float, float]) -> None:
        self.run, self.epoch, self.batches = run, epoch, batches
        self.accum = run.cfg.optim.grad_accum
        self.values = torch.zeros(2, SYNC_EVERY * self.accum, device=run.dist.device)  # loss x samples; skipped
        self.first, self.first_step = done, run.step - done // self.accum  # the window's first micro-batch
        self.sums, self.samples, self.start = sums, run.cfg.optim.batch_size, time.perf_counter()
        self.bar = tqdm(total=batches, initial=done, desc=f"epoch {epoch + 1}/{run.cfg.optim.epochs}", unit="batch",
                        dynamic_ncols=True, disable=not (run.options.progress and run.dist.is_main), leave=False)

    def add_loss(self, index: int, loss: torch.Tensor, samples: int) -> None:
        self.values[0, index - self.first] = loss.detach() * samples

    def add_step(self, index: int, skipped: torch.Tensor | None) -> None:
        if skipped is not None:
            self.values[1, index - self.first] = skipped

    def advance(self, end: int, stepped: bool) -> None:
        """Micro-batch ``end - 1`` is done; read the window after every ``SYNC_EVERY``-th optimizer step."""
        self.bar.update(1)
        if stepped and (self.run.step - self.first_step) % SYNC_EVERY == 0:
            before = self.sums
            loss_sum, seen = self.read(end)
            self.bar.set_postfix(loss=f"{(loss_sum - before[0]) / max(seen - before[1], 1.0):.4f}",
                                 lr=f"{self.run.lr():.2e}",
                                 img_s=f"{seen / max(time.perf_counter() - self.start, 1e-9):.0f}")

    def close(self, end: int) -> tuple[float, float]:
        """Read what is left up to micro-batch ``end - 1``; the epoch's (loss x samples, samples)."""
        if self.first < end:
            self.read(end)
        self.bar.close()
        return self.sums

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

    def read(self, end: int) -> tuple[float, float]:
        """Add micro-batches ``first .. end - 1`` with a finite loss on every rank, one at a time (the same sums
        wherever windows start: a mid-epoch resume starts one); report bad steps. Returns the sums."""
        used = end - self.first
        block = distributed.all_reduce_sum(self.values[:, :used].double())  # a NaN on any rank makes the sum NaN
        losses, skipped = block.tolist()
        self.values.zero_()
        world, accum = self.run.dist.world_size, self.accum
        loss_sum, seen = self.sums
        for start in range(0, used, accum):
            step_losses = losses[start:start + accum]
            bad = [i for i, value in enumerate(step_losses) if not math.isfinite(value)]
            index = self.first + start  # micro-batch index in the epoch
            step = self.first_step + index // accum + 1
            if bad:
                value = step_losses[bad[0]] / (self.samples * world)
                self.skip(f"non-finite loss ({value})", step, index + bad[0])
            elif skipped[start + accum - 1]:
                self.skip("non-finite gradient", step, index + accum - 1)
            for value in step_losses:
                if math.isfinite(value):
                    loss_sum += value
                    seen += self.samples * world
        self.first, self.sums = end, (loss_sum, seen)
        return self.sums


def train_one_epoch(run: Run, epoch: int, partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """One pass over the training data (the rest of it after ``partial``, where a stopped run left it): mean loss,
    samples, seconds and the lr curve; or, when the ranks voted to stop on a signal, ``stopped_at`` (batches done)
    with the running sums. A non-finite loss stops the run at the next ``LossWindow`` read, naming the first bad
    step; with ``skip_nonfinite`` a bad step is skipped on every rank (``NonFiniteGuard``, ``optimizer_step``).
    """
    net, accum = run.net, run.cfg.optim.grad_accum
    batches = run.updates_per_epoch * accum  # trailing batches that do not fill an optimizer step are left out
    done, seconds_before, sums, loader = resume_position(run, partial)
    window = LossWindow(run, epoch, batches, done, sums)
    guard = NonFiniteGuard(run.model, enabled=run.cfg.run.skip_nonfinite > 0)
    params = [p for p in run.model.parameters() if p.requires_grad]
    lr_every = max(1, run.updates_per_epoch // LR_POINTS)
    lr_curve = list(partial.get("lr_curve", [])) if partial else []  # [epoch as a fraction, lr of that step]
    stopped_at = 0
    net.train()
    for index, (images, labels) in enumerate(loader, start=done):
        if index >= batches:
            break
        images, targets = to_device(run, images, labels)
        last_micro = (index + 1) % accum == 0
        # gradients are all-reduced only on the batch that completes an optimizer step
        sync = contextlib.nullcontext() if last_micro or run.dist.world_size == 1 else net.no_sync()
        with guard.protect(), sync:
            with autocast(run.dist.device, run.amp_dtype):
                loss = run.criterion(net(images), targets)
            window.add_loss(index, loss, len(labels))
            run.scaler.scale(guard.poison(loss) / accum).backward()
        if last_micro:
            if (index // accum) % lr_every == 0:
                lr_curve.append([epoch + (index // accum) / run.updates_per_epoch, run.lr()])
            run.step += 1
            window.add_step(index, optimizer_step(run, params))
            if run.scheduler is not None:
                run.scheduler.step_update(num_updates=run.step)
            if run.vote.poll(run.stop.requested):  # a signal: stop here, on every rank at the same step
                stopped_at = index + 1
        window.advance(index + 1, last_micro)
        if stopped_at:
            break
    sums = window.close(stopped_at or batches)
    del loader
    seconds = seconds_before + time.perf_counter() - window.start
    if stopped_at:
        return {"stopped_at": stopped_at, "sums": list(sums), "epoch_time_s": seconds, "lr_curve": lr_curve}
    return {"train_loss": sums[0] / max(sums[1], 1.0), "train_samples": int(sums[1]), "epoch_time_s": seconds,
            "lr_curve": lr_curve}
