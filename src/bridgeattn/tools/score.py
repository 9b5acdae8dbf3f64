"""Scoring saved weights on a data set (``bridgeattn eval``): a training run with its own settings, so the accuracy
stored at training time is reproduced; plain weights on ``data`` at their stored input size."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data import DataConfig, build_datasets
from ..engine import distributed
from ..engine.evaluate import evaluate
from ..engine.hardware import amp_dtype_for
from ..engine.records import write_eval_report
from ..engine.runlock import RunLock
from ..errors import UserError
from ..files import check_writable, write_json
from ..weights.loading import load_model

__all__ = ["evaluate_checkpoint"]

log = logging.getLogger(__name__)


def evaluate_checkpoint(path: str | Path, data: str | None = None, batch_size: int | None = None, workers: int = 0,
                        val_subset: int | None = -1, use_ema: bool = False, device: str = "auto",
                        unsafe: bool = False, output: str | Path | None = None, plots: bool = True,
                        progress: bool = False, model: str | None = None) -> dict[str, Any]:
    """Evaluate the weights at ``path`` (run folder, checkpoint, weights file or hub folder) on ``data`` (default: a
    training run's own data set); ``val_subset=-1`` keeps the run's validation subset (``None``: all); ``model`` names
    the model of weights that do not say. Only the validation split is read. Writes ``eval.json``, ``per_class.csv``
    and ``confusion.png`` to ``output`` (default: ``RUN/eval``, else ``<weights>-eval``); a report inside a run folder
    takes the run's lock first, so a run still training there is refused (``UserError``). Returns the metrics plus
    ``stored_top1`` (the run's last recorded top-1) and the epoch."""
    location = Path(path)
    loaded = load_model(location, model, use_ema=use_ema, unsafe=unsafe)
    folder = loaded.source.resolve().parent  # the training run the weights come from (RUN/checkpoints/FILE), if any
    run = folder.parent if loaded.kind == "run" or folder.name == "checkpoints" else None
    if output:
        out = Path(output)
    elif run is not None:
        out = run / "eval"
    else:  # beside the weights
        out = (location.with_name(location.name + "-eval") if location.is_dir()
               else loaded.source.with_name(loaded.source.stem + "-eval"))
    check_writable(out, folder=True)  # before the data and the evaluation, not after them
    # a report inside a run folder is written under the run's lock: a run still training there is not disturbed
    inside = run is not None and out.resolve().is_relative_to(run)
    with RunLock(run) if inside else contextlib.nullcontext():
        dev = distributed.resolve_device(device)
        if loaded.config is not None:
            cfg = loaded.train_config
            data_cfg = cfg.data
            data_cfg.spec = data or data_cfg.spec
            if val_subset != -1:
                data_cfg.val_subset = val_subset
            # the shape the weights were trained at (recorded with them), not one sampled from the data again
            data_cfg.img_size = data_cfg.img_size or loaded.preprocessing.img_size
            data_cfg.in_chans = data_cfg.in_chans or loaded.preprocessing.in_chans
            default_batch = cfg.optim.val_batch_size or 2 * cfg.optim.batch_size
            amp_dtype = amp_dtype_for(cfg.run.amp, dev, cfg.run.amp_dtype)  # as in training: the stored top-1 again
            channels_last = cfg.run.channels_last
        else:
            if data is None:
                raise UserError(f"{path} holds weights without a training run: pass --data SPEC to evaluate them on")
            prep = loaded.preprocessing
            data_cfg = DataConfig(spec=data, img_size=prep.img_size, in_chans=prep.in_chans,
                                  val_subset=None if val_subset == -1 else val_subset)
            default_batch, amp_dtype, channels_last = 64, None, False
        _, val_set, info = build_datasets(data_cfg, splits=("val",))
        info.input_from = "from the weights"  # eval always feeds the shape the weights were trained at
        log.info("evaluating %s on %s, %s", loaded.name, data_cfg.spec, info.describe_input())
        num_classes = int(getattr(loaded.model, "num_classes", info.num_classes))
        if info.num_classes != num_classes:
            raise UserError(f"{data_cfg.spec} has {info.num_classes} classes but the weights have {num_classes}")
        net = loaded.model.to(dev, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        loader = DataLoader(val_set, batch_size=batch_size or default_batch, num_workers=workers,
                            pin_memory=dev.type == "cuda")
        metrics = evaluate(net, loader, dev, num_classes=num_classes, amp_dtype=amp_dtype, channels_last=channels_last,
                           progress=progress)
        record = (loaded.checkpoint.get("history") or [{}])[-1]
        epoch = loaded.checkpoint.get("epoch")
        result = {**metrics, "stored_top1": record.get("ema_top1" if use_ema else "top1"),
                  "stored_val_samples": record.get("val_samples"),
                  "stored_subset": bool(loaded.config is not None and loaded.train_config.data.val_subset),
                  "checkpoint": str(loaded.source), "epoch": epoch, "model": loaded.name, "data": data_cfg.spec,
                  "weights": "ema" if use_ema else "model"}
        title = f"{loaded.name}" + (f" epoch {epoch}" if epoch is not None else "") + f": top-1 {metrics['top1']:.2f} %"
        result.update(write_eval_report(metrics, loaded.class_names or info.class_names, out, plots=plots, title=title))
        write_json(out / "eval.json", result)
        result["output"] = str(out)
        return result
