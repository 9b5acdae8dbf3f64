"""Evaluation: top-1, top-5, loss, per-class accuracy and the confusion matrix, exact under DDP."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed
from .config import TrainConfig


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None):
    """``torch.autocast`` for ``device`` when enabled, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str | None = None,
             num_classes: int | None = None, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``loader`` (items ``(B, C, H, W)`` images, ``(B,)`` labels).

    Under DDP each process evaluates its own shard (use ``ShardSampler``: no padded repeats) and the sums are
    all-reduced, so the counts are exact. Returns ``top1``/``top5`` (percent), ``loss`` (mean cross-entropy),
    ``count``, ``per_class`` (accuracy per class, percent; None for classes without samples) and ``confusion``
    (rows: true class, columns: predicted class).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, count
    confusion: torch.Tensor | None = None
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype is not None, amp_dtype):
            logits = model(images)
        logits = logits.float()
        if confusion is None:
            num_classes = num_classes or logits.shape[1]
            confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        sums += torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                             hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                             torch.tensor(float(len(labels)), device=device, dtype=torch.float64)])
        confusion += torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes * num_classes)
    if confusion is None:  # an empty shard: still take part in the reductions
        num_classes = num_classes or 1
        confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    distributed.all_reduce_sum(sums)
    distributed.all_reduce_sum(confusion)
    model.train(was_training)
    loss, correct1, correct5, count = sums.tolist()
    matrix = confusion.view(num_classes, num_classes).cpu()
    per_true = matrix.sum(dim=1)
    per_class = [100.0 * int(matrix[i, i]) / int(per_true[i]) if per_true[i] else None for i in range(num_classes)]
    n = max(count, 1.0)
    return {
        "top1": 100.0 * correct1 / n,
        "top5": 100.0 * correct5 / n,
        "loss": loss / n,
        "count": int(count),
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }


def evaluate_checkpoint(path: str, data: str | None = None, batch_size: int | None = None, workers: int = 0,
                        val_subset: int | None = -1, use_ema: bool = False, device: str = "auto",
                        unsafe: bool = False, output: str | None = None, plots: bool = True,
                        progress: bool = False) -> dict[str, Any]:
    """Evaluate a training checkpoint (file or run folder) on its run's validation data, or on ``data``.

    Uses the stored config (model, data transforms, eval batch size, AMP) so the stored accuracy is reproduced;
    ``val_subset=-1`` keeps the stored subset. Writes ``eval.json``, ``per_class.csv`` and ``confusion.png`` to
    ``output`` (default: ``RUN/eval``). Returns the metrics plus ``stored_top1`` and the checkpoint's epoch.
    """
    from pathlib import Path

    from .. import create_model
    from ..data import build_datasets
    from ..errors import UserError
    from .checkpoint import load_checkpoint
    from .config import make_config
    from .records import write_eval_report, write_json

    state = load_checkpoint(path, unsafe=unsafe)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in state["config"].items() if k in fields}  # older checkpoints may hold others
    cfg = make_config(known)
    if data is not None:
        cfg.data = data
    if val_subset != -1:
        cfg.val_subset = val_subset
    _, val_set, info = build_datasets(cfg.data_config())
    if info.num_classes != state["num_classes"]:
        raise UserError(f"{cfg.data} has {info.num_classes} classes but the checkpoint was trained on "
                        f"{state['num_classes']}")
    dev = distributed.resolve_device(device)
    model = create_model(cfg.model, num_classes=state["num_classes"], in_chans=state["in_chans"], **cfg.model_kwargs)
    if use_ema and state.get("ema") is None:
        raise UserError(f"{state['path']} holds no EMA weights (trained without --ema)")
    model.load_state_dict(state["ema"] if use_ema else state["model"])
    model.to(dev)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = DataLoader(val_set, batch_size=batch_size or cfg.val_batch_size or 2 * cfg.batch_size,
                        num_workers=workers, pin_memory=dev.type == "cuda")
    from .train import amp_dtype_for

    amp_dtype = amp_dtype_for(cfg, dev)  # as in training, so the stored accuracy is reproduced
    metrics = evaluate(model, loader, dev, num_classes=state["num_classes"], amp_dtype=amp_dtype,
                       channels_last=cfg.channels_last, progress=progress)
    ckpt_path = Path(state["path"])
    run_dir = ckpt_path.resolve().parent.parent if ckpt_path.resolve().parent.name == "checkpoints" else None
    out = Path(output) if output else (run_dir / "eval" if run_dir else ckpt_path.with_name(ckpt_path.stem + "-eval"))
    record = state["history"][-1] if state.get("history") else {}
    result = {
        **metrics,
        "stored_top1": record.get("ema_top1" if use_ema else "top1"),
        "checkpoint": str(ckpt_path),
        "epoch": state["epoch"],
        "model": cfg.model,
        "data": cfg.data,
        "weights": "ema" if use_ema else "model",
    }
    paths = write_eval_report(metrics, state.get("class_names") or info.class_names, out, plots=plots,
                              title=f"{cfg.model} epoch {state['epoch']}: top-1 {metrics['top1']:.2f} %")
    result.update(paths)
    write_json(out / "eval.json", result)
    result["output"] = str(out)
    return result

