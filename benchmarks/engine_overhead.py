"""What the training engine costs over a bare loop: ``bridgeattn.engine.train`` vs forward, loss, backward, step.

Both train the same model (same initial weights, same optimizer settings) on the same in-memory data set
through the same DataLoader settings; the rounds alternate engine / bare loop, so a busy machine slows both alike.
The engine's figure is its epoch time (the loop only: data, forward, loss, backward, step, schedule, EMA and
bookkeeping; not evaluation nor checkpoints); the bare loop is timed the same way, from the first batch fetched
to the last step.

    OMP_NUM_THREADS=2 python benchmarks/engine_overhead.py                      # CPU, 5 rounds
    python benchmarks/engine_overhead.py --rounds 2 --samples 128 --out /tmp/e.json   # a smoke run

The last line printed is ``engine/loop img/s ratio: X``, the median of the rounds' ratios (each round's two
epochs run back to back, so a load that drifts over minutes cancels out of its ratio).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader

import bridgeattn
from bridgeattn.config import from_flat
from bridgeattn.data import build_datasets, loader_options
from bridgeattn.engine import train
from bridgeattn.files import write_json
from bridgeattn.tools.benchmark import machine_info

ROOT = Path(__file__).resolve().parents[1]


def engine_epoch(options: dict[str, Any], folder: Path) -> float:
    """img/s of one engine epoch (a fresh run in ``folder``)."""
    cfg, launch = from_flat({**options, "output": str(folder), "progress": False})
    with contextlib.redirect_stdout(io.StringIO()):
        summary = train(cfg, launch)
    return float(summary["train_img_per_s"])


def loop_epoch(options: dict[str, Any], device: torch.device) -> float:
    """img/s of one epoch of the bare loop: forward, loss, backward, step, nothing else."""
    cfg, _ = from_flat(options)
    o = cfg.optim
    train_set, _, info = build_datasets(cfg.data)
    torch.manual_seed(cfg.run.seed)
    model = bridgeattn.create_model(cfg.model.name, num_classes=info.num_classes, in_chans=info.in_chans).to(device)
    optimizer = create_optimizer_v2(model, opt=o.opt, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
                                    filter_bias_and_bn=o.filter_bias_and_bn)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(train_set, batch_size=o.batch_size, shuffle=True, drop_last=True,
                        **loader_options(cfg.run.workers, device))
    model.train()
    seen = 0
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="bav2_resnet20")
    parser.add_argument("--samples", type=int, default=512, help="synthetic training samples (one epoch each)")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, each one engine and one loop epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as set)")
    parser.add_argument("--out", default=str(ROOT / "docs/results/engine_overhead.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = dict(model=args.model, data=f"synthetic:{args.samples}", img_size=args.img_size,
               batch_size=args.batch_size, epochs=1, warmup_epochs=0, workers=args.workers, device=args.device,
               plots=False)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds + 1):  # round 0 warms both up and is not counted
            folder = Path(tmp) / f"engine-{index}"
            order = [("engine", functools.partial(engine_epoch, cfg, folder)),
                     ("loop", functools.partial(loop_epoch, cfg, device))]
            if index % 2:
                order.reverse()  # neither always goes first
            figures = {name: run() for name, run in order}
            if index:
                rows.append(figures)
                print(f"round {index}: engine {figures['engine']:.1f} img/s  loop {figures['loop']:.1f} img/s  "
                      f"ratio {figures['engine'] / figures['loop']:.3f}", flush=True)
    engine = statistics.median(r["engine"] for r in rows)
    loop = statistics.median(r["loop"] for r in rows)
    ratio = statistics.median(r["engine"] / r["loop"] for r in rows)
    result = {
        "command": shlex.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device),
        "config": from_flat(cfg)[0].to_dict(),
        "rounds": rows,
        "engine_img_per_s": engine,
        "loop_img_per_s": loop,
        "ratio": ratio,  # median of the per-round ratios
        "ratio_of_medians": engine / loop,
    }
    write_json(Path(args.out), result)
    print(f"median over {len(rows)} rounds: engine {engine:.1f} img/s, loop {loop:.1f} img/s; wrote {args.out}")
    print(f"engine/loop img/s ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
