"""The training loop reads the device only at log intervals: no per-step ``.item()``, synchronisation or vote."""
from __future__ import annotations

import importlib
import math
import sys

import torch

from bridgeattn.config import from_flat
from bridgeattn.engine import train

engine_train = importlib.import_module("bridgeattn.engine.train")
distributed = importlib.import_module("bridgeattn.engine.distributed")
loop = importlib.import_module("bridgeattn.engine.loop")

# 96 samples in batches of 4: 24 optimizer steps in one epoch
SMALL = dict(model="bav2_resnet20", data="synthetic:96", img_size=16, batch_size=4, lr=1e-3, epochs=1, workers=0,
             warmup_epochs=0, progress=False, plots=False)
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")


# Callers whose tensors live on the host by design: the data pipeline (loader workers) and torch's optimizers
# (Adam keeps its step counter on the CPU precisely so that reading it needs no device synchronisation).
HOST_SIDE = ("bridgeattn.data", "torch.utils.data", "torch.optim")


def _host_side() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(HOST_SIDE):
            return True
        frame = frame.f_back
    return False


def _count_reads(monkeypatch) -> dict[str, int]:
    """Count host reads of tensors, CUDA synchronisations and collectives made while an epoch trains."""
    counts = {name: 0 for name in (*HOST_READS, "synchronize", "all_reduce")}

    def counting(name, real):
        def wrapper(*args, **kwargs):
            if active["on"] and not _host_side():
                counts[name] += 1
            return real(*args, **kwargs)
        return wrapper

    active = {"on": False}
    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch.cuda, "synchronize", counting("synchronize", torch.cuda.synchronize))
    monkeypatch.setattr(distributed, "all_reduce_sum", counting("all_reduce", distributed.all_reduce_sum))
    real_epoch = engine_train.train_one_epoch

    def epoch(run, index, *rest):
        active["on"] = True
        try:
            return real_epoch(run, index, *rest)
        finally:
            active["on"] = False

    monkeypatch.setattr(engine_train, "train_one_epoch", epoch)
    return counts


def test_an_epoch_reads_the_device_once_per_log_interval(tmp_path, monkeypatch):
    counts = _count_reads(monkeypatch)
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), **SMALL)))
    assert summary["steps"] == 24 and summary["status"] == "finished"
    windows = math.ceil(24 / loop.SYNC_EVERY)  # reads after steps 10, 20 and at the end of the epoch
    assert counts["tolist"] == windows and counts["all_reduce"] == windows
    others = {k: v for k, v in counts.items() if k not in ("tolist", "all_reduce")}
    assert not any(others.values()), others
    assert summary["train_img_per_s"] > 0 and math.isfinite(summary["loss"])


def test_skipping_a_bad_step_needs_no_collective_per_step(tmp_path, monkeypatch):
    counts = _count_reads(monkeypatch)
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), skip_nonfinite=1, **SMALL)))
    assert summary["skipped_steps"] == 0
    assert counts["all_reduce"] == math.ceil(24 / loop.SYNC_EVERY)
    assert counts["item"] <= 24  # AdamW is not fused: one read of the skip flag per optimizer step at most


def test_persistent_workers_draw_the_same_augmentations_whatever_their_number(tmp_path):
    # each sample's augmentation is seeded from (seed, epoch, index), not from the worker that loads it
    tiny = dict(SMALL, data="synthetic:32", batch_size=8, epochs=2, deterministic=True)
    runs = [train(*from_flat(dict(output=str(tmp_path / f"w{n}"), **dict(tiny, workers=n)))) for n in (1, 2)]
    assert runs[0]["steps"] == runs[1]["steps"] == 8
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["top1"] == runs[1]["top1"]
