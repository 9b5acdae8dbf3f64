"""``bridgeattn demo``: BAv2 vs the plain baseline on Fashion-MNIST with the CPU demo recipe, side by side; any
training flag of ``bridgeattn train`` changes the recipe for every model of the demo."""
from __future__ import annotations

import argparse

from ...config import add_train_arguments, flags_given, listed
from ...errors import UserError
from ...files import check_writable
from ..arguments import switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true", help="the full recipe, cpu_demo_full: 2 epochs over all "
                        "60,000 training images (about 12 minutes of training on 2 AVX2 cores)")
    parser.add_argument("--models", nargs="+", action=listed(), metavar="MODEL", help="models to train under the "
                        "same budget, comma- or space-separated (default: bav2_resnet20,plain_resnet20)")
    parser.add_argument("--output", metavar="DIR", help="demo folder (default: runs/demo-<date>-<time>)")
    switch(parser, "--resume", "continue an interrupted demo in --output")
    switch(parser, "--progress", "progress bars", default=True)
    switch(parser, "--probe", "on a CPU, first time a few steps of float32 / bf16 autocast (bf16 only with native "
           "bf16), NCHW / channels_last and one thread / the default, and train both models the fastest way; flags "
           "given here win (--no-probe: the recipe's settings)", default=True)
    add_train_arguments(parser, launch=False, exclude=("model",), show_defaults=False, config_help="recipe (default: "
                        "cpu_demo: 3 epochs over a fixed 12,800-image subset, about 5 minutes on 2 AVX2 cores)")


def run(args: argparse.Namespace) -> int:
    from ...tools.demo import DEMO_MODELS, run_demo

    if args.resume and not args.output:
        raise UserError("--resume continues the demo in --output DIR; give the folder")
    config = getattr(args, "config", None)
    if args.full and config:
        raise UserError("--full picks the cpu_demo_full recipe; give --full or --config, not both")
    config = "cpu_demo_full" if args.full else config or "cpu_demo"
    check_writable(args.output or "runs", folder=True)  # before the probe and the training
    result = run_demo(config, args.models or DEMO_MODELS, args.output, flags_given(args), resume=args.resume,
                      progress=args.progress, probe=args.probe)
    rows = result["models"]
    print()
    print(f"{'model':24s} {'params':>10s} {'test top-1':>11s} {'top-5':>8s} {'train img/s':>12s} {'time':>8s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['params']:10,d} {r['top1']:10.2f}% {r['top5']:7.2f}% {r['train_img_per_s']:12.0f} "
              f"{r['train_time_s']:7.0f}s")
    names = list(rows)
    if len(names) == 2:
        gap = rows[names[0]]["top1"] - rows[names[1]]["top1"]
        print(f"{names[0]} - {names[1]}: {gap:+.2f} points test top-1 (one seed; `bridgeattn compare` runs several)")
    if result.get("numerics"):
        print(f"numerics: {result['numerics']['reason']}")
    print(f"total {result['time_s']:.0f} s; results in {result['output']}/demo.json")
    if "plot" in result:
        print(f"plots: {result['plot']} (both models) and <model>/curves.png, <model>/confusion.png under "
              f"{result['output']}")
    return 0
