"""Evaluation: top-1, top-5, loss, per-class accuracy and the confusion matrix, exact under DDP."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..models.cost import training_mode
from . import distributed
from .hardware import autocast


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str | None = None,
             num_classes: int | None = None, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             progress: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on ``loader`` (``(B, C, H, W)`` images, ``(B,)`` labels): ``top1``/``top5`` (%), ``loss``
    (mean cross-entropy), ``count``, ``per_class`` (%, None without samples) and ``confusion`` (rows: true class).
    Exact under DDP: each rank evaluates its shard (no padded repeats) and the sums are all-reduced."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct@1, correct@5, count
    confusion: torch.Tensor | None = None
    with training_mode(model, False):
        for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp_dtype):
                logits = model(images).float()
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
    loss, correct1, correct5, count = sums.tolist()
    matrix = confusion.view(num_classes, num_classes).cpu()
    per_true = matrix.sum(dim=1)
    per_class = [100.0 * int(matrix[i, i]) / int(per_true[i]) if per_true[i] else None for i in range(num_classes)]
    n = max(count, 1.0)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n, "count": int(count),
            "per_class": per_class, "confusion": matrix.tolist()}
