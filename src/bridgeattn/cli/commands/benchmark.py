"""``bridgeattn benchmark``: interleaved img/s of several models, medians and ratios to the first."""
from __future__ import annotations

import argparse
import sys

from ...config import listed
from ..arguments import DEVICE_HELP, add_json_arguments, device, emit_json, non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, nargs="+", action=listed(), metavar="MODEL",
                        help="model names (comma- or space-separated); ratios are to the first")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N", help="batch size")
    parser.add_argument("--img-size", type=positive_int, metavar="N",
                        help="image side (default: each model's own input size)")
    bool_flag = argparse.BooleanOptionalAction
    parser.add_argument("--train", action=bool_flag, default=False,
                        help="time a train step (forward, backward, SGD step) instead of inference")
    parser.add_argument("--channels-last", action=bool_flag, default=False, help="channels_last memory format")
    parser.add_argument("--compile", action=bool_flag, default=False, help="torch.compile every model")
    parser.add_argument("--amp", action=bool_flag, default=False, help="autocast (bfloat16 on CPU)")
    parser.add_argument("--fuse", action=bool_flag, default=False,
                        help="fold the bridge gates for inference (bridgeattn.fuse)")
    parser.add_argument("--repeats", type=positive_int, default=7, metavar="N",
                        help="interleaved timed rounds, the median reported")
    parser.add_argument("--steps", type=positive_int, default=1, metavar="N", help="steps per model per round")
    parser.add_argument("--warmup", type=non_negative_int, default=2, metavar="N", help="untimed steps per model first")
    parser.add_argument("--device", type=device, default="auto", help=DEVICE_HELP)
    parser.add_argument("--threads", type=positive_int, metavar="N", help="torch.set_num_threads for CPU runs")
    parser.add_argument("--progress", action=bool_flag, default=True, help="report warm-up and rounds on stderr")
    add_json_arguments(parser, "report")


def run(args: argparse.Namespace) -> int:
    import torch

    from ...models.checks import check_model_input
    from ...tools.benchmark import benchmark, format_table

    for name in args.models:  # a size some model cannot take: one line naming one it can, before any timing
        check_model_input(name, args.img_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = benchmark(
        args.models, batch_size=args.batch_size, img_size=args.img_size, train=args.train,
        channels_last=args.channels_last, compile=args.compile, amp=args.amp, fuse=args.fuse,
        repeats=args.repeats, steps=args.steps, warmup=args.warmup,
        device=args.device,
        progress=(lambda msg: print(msg, file=sys.stderr, flush=True)) if args.progress else None,
    )
    if not args.print_json:
        print(format_table(report))
    emit_json(args, report)
    return 0
