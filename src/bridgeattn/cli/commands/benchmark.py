"""``bridgeattn benchmark``: interleaved img/s of several models, medians and ratios to the first."""
from __future__ import annotations

import argparse
import sys

from ...config import listed
from ..arguments import add_device_argument, add_int_argument, add_json_arguments, emit_json, non_negative_int, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, nargs="+", action=listed(), metavar="MODEL",
                        help="model names (comma- or space-separated); ratios are to the first")
    add_int_argument(parser, "--batch-size", "batch size", default=8)
    add_int_argument(parser, "--img-size", "image side (default: each model's own input size)")
    switch(parser, "--train", "time a train step (forward, backward, SGD step) instead of inference")
    switch(parser, "--channels-last", "channels_last memory format")
    switch(parser, "--compile", "torch.compile every model")
    switch(parser, "--amp", "autocast (bfloat16 on CPU)")
    switch(parser, "--fuse", "fold the bridge gates for inference (bridgeattn.fuse)")
    add_int_argument(parser, "--repeats", "interleaved timed rounds, the median reported", default=7)
    add_int_argument(parser, "--steps", "steps per model per round", default=1)
    add_int_argument(parser, "--warmup", "untimed steps per model first", default=2, check=non_negative_int)
    add_device_argument(parser)
    add_int_argument(parser, "--threads", "torch.set_num_threads for CPU runs")
    switch(parser, "--progress", "report warm-up and rounds on stderr", default=True)
    add_json_arguments(parser, "report")


def run(args: argparse.Namespace) -> int:
    import torch

    from ...models.checks import check_model_input
    from ...tools.benchmark import benchmark, format_table

    for name in args.models:  # a size some model cannot take: one line naming one it can, before any timing
        check_model_input(name, args.img_size)
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = (lambda msg: print(msg, file=sys.stderr, flush=True)) if args.progress else None
    report = benchmark(args.models, batch_size=args.batch_size, img_size=args.img_size, train=args.train,
                       device=args.device, channels_last=args.channels_last, compile=args.compile, amp=args.amp,
                       fuse=args.fuse, repeats=args.repeats, steps=args.steps, warmup=args.warmup, progress=progress)
    emit_json(args, report, format_table(report))
    return 0
