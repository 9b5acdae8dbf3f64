"""``bridgeattn train``: train a model; ``--nproc N`` relaunches itself under torchrun for DDP."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..engine.config import add_train_arguments

    add_train_arguments(parser)


def _launch(cfg) -> int:
    """Write the merged config to a temp file and run it in ``cfg.nproc`` processes under torchrun."""
    from datetime import datetime

    import timm

    from ..engine import distributed
    from ..engine.config import dump_yaml
    from ..engine.runlock import LOCK_ENV, RunLock
    from ..errors import UserError

    if not timm.is_model(cfg.model):
        raise UserError(f"unknown model {cfg.model!r} (see `bridgeattn models`)")
    # every process and every elastic restart must agree on one run folder
    cfg.output = cfg.output or str(Path("runs") / f"{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}")
    nproc, restarts = cfg.nproc, cfg.max_restarts
    cfg.nproc, cfg.max_restarts = 1, 0
    # the launcher holds the run folder's lock for all workers and every restart; they find its pid in LOCK_ENV
    with RunLock(cfg.output), tempfile.TemporaryDirectory(prefix="bridgeattn-launch-") as tmp:
        path = Path(tmp) / "config.yaml"
        dump_yaml(cfg, path)
        code = distributed.launch_torchrun(str(path), nproc, restarts, env={LOCK_ENV: str(os.getpid())})
    if code:
        print(f"bridgeattn train: torchrun exited with status {code} (see the messages above)", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from ..engine import TrainingStopped, config_from_args, train

    cfg = config_from_args(args)
    if cfg.nproc > 1:
        return _launch(cfg)
    try:
        summary = train(cfg)
    except TrainingStopped as exc:
        print(f"bridgeattn train: stopped: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun rank 0 reports
    best = (f"best top-1 {summary['best_top1']:.2f} % at epoch {summary['best_epoch']}"
            if summary["best_top1"] is not None else "no epoch with finite weights and loss")
    print(f"top-1 {summary['top1']:.2f} %  top-5 {summary['top5']:.2f} %  loss {summary['loss']:.4f}  "
          f"({best}; {summary['train_img_per_s']:.0f} img/s)")
    print(f"run folder: {summary['output']} (summary.json, metrics.csv, curves.png, confusion.png, checkpoints/)")
    return 0
