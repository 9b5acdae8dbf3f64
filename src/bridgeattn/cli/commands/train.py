"""``bridgeattn train``: train a model; ``--nproc N`` relaunches itself under torchrun for DDP."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ...config import add_train_arguments, config_from_args, dump_yaml
from ...errors import UserError
from ...files import check_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)


def _worker_flags(options) -> list[str]:
    """The launch options as flags for the worker processes (they are never written into a file)."""
    flags = ["--output", options.output]
    if options.resume:
        flags += ["--resume", options.resume]
    if options.unsafe_load:
        flags.append("--unsafe-load")
    if options.overwrite:
        flags.append("--overwrite")
    if not options.progress:
        flags.append("--no-progress")
    return flags


def _launch(cfg, options) -> int:
    """Write the merged config to a temp file and run it in ``options.nproc`` processes under torchrun."""
    from datetime import datetime

    from ...engine import distributed
    from ...engine.interrupt import EXIT_CTRL_C, EXIT_TERMINATED
    from ...engine.runlock import LOCK_ENV, RunLock
    from ...models.checks import check_model_input

    check_model_input(cfg.model.name, cfg.data.img_size, cfg.data.in_chans, **cfg.model.kwargs)  # before any file
    # every process and every elastic restart must agree on one run folder
    options.output = options.output or str(Path("runs") / f"{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}")
    # the launcher holds the run folder's lock for all workers and every restart; they find its pid in LOCK_ENV
    with RunLock(options.output) as lock, tempfile.TemporaryDirectory(prefix="bridgeattn-launch-") as tmp:
        path = Path(tmp) / "config.yaml"
        dump_yaml(cfg, path)
        code = distributed.launch_torchrun(str(path), options.nproc, options.max_restarts,
                                           env={LOCK_ENV: str(os.getpid())}, train_args=_worker_flags(options))
        if code == 2:  # the workers refused the run (a one-line error): no lock file or new empty folder stays
            lock.discard()
    if code in (EXIT_TERMINATED, EXIT_CTRL_C):
        print(f"bridgeattn train: stopped on request; continue with: bridgeattn train --output {options.output} "
              f"--resume auto --nproc {options.nproc}", file=sys.stderr)
    elif code:
        print(f"bridgeattn train: torchrun exited with status {code} (see the messages above)", file=sys.stderr)
    return code


def _check_launcher(options) -> None:
    """``--nproc``/``--max-restarts`` start torchrun; under torchrun (LOCAL_RANK set) they make no sense."""
    under_torchrun = "LOCAL_RANK" in os.environ
    if options.nproc > 1 and under_torchrun:
        raise UserError("--nproc launches torchrun itself; under torchrun leave --nproc out")
    if options.max_restarts and options.nproc == 1 and not under_torchrun:
        raise UserError("--max-restarts is for torchrun's elastic restarts: use it with --nproc N")


def run(args: argparse.Namespace) -> int:
    import timm

    from ...engine import TrainingStopped, train
    from ...engine.interrupt import TrainingInterrupted

    cfg, options = config_from_args(args)
    _check_launcher(options)
    check_writable(options.output or "runs", folder=True)  # before the model, the data and the run folder
    if not timm.is_model(cfg.model.name):
        raise UserError(f"unknown model {cfg.model.name!r} (see `bridgeattn models`)")
    if options.nproc > 1:
        return _launch(cfg, options)
    try:
        summary = train(cfg, options)
    except TrainingStopped as exc:
        print(f"bridgeattn train: stopped: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:  # checkpoint and summary.json written: 143 (SIGTERM/SIGUSR1), 130 (Ctrl-C)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"bridgeattn train: {exc}", file=sys.stderr)
        return exc.exit_code
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun rank 0 reports
    best = (f"best top-1 {summary['best_top1']:.2f} % at epoch {summary['best_epoch']}"
            if summary["best_top1"] is not None else "no epoch with finite weights and loss")
    print(f"top-1 {summary['top1']:.2f} %  top-5 {summary['top5']:.2f} %  loss {summary['loss']:.4f}  "
          f"({best}; {summary['train_img_per_s']:.0f} img/s)")
    print(f"run folder: {summary['output']} (summary.json, metrics.csv, curves.png, confusion.png, checkpoints/)")
    return 0
