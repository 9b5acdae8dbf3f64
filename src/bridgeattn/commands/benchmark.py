"""``bridgeattn benchmark``: interleaved img/s of several models, medians and ratios to the first."""
from __future__ import annotations

import argparse
import sys

from . import write_json_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="comma-separated model names; ratios are to the first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--train", action="store_true", help="time a train step (forward, backward, SGD step)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU)")
    parser.add_argument("--fuse", action="store_true", help="fold the bridge gates for inference (bridgeattn.fuse)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timed rounds (median reported)")
    parser.add_argument("--steps", type=int, default=1, help="steps per model per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..benchmark import benchmark, format_table
    from ..errors import UserError

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        raise UserError("--models needs at least one model name")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = benchmark(
        names, batch_size=args.batch_size, img_size=args.img_size, train=args.train,
        channels_last=args.channels_last, compile=args.compile, amp=args.amp, fuse=args.fuse,
        repeats=args.repeats, steps=args.steps, warmup=args.warmup, device=args.device,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_table(report))
    write_json_report(args.json, report)
    return 0
