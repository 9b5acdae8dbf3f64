"""``bridgeattn profile``: params, MACs, per-stage breakdown and training-step activation memory of one model."""
from __future__ import annotations

import argparse

from . import write_json_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name, e.g. bav2_resnet50 or resnet50")
    parser.add_argument("--img-size", type=int, help="image side (default: the model's default input size)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch of the training step for activation memory")
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to this file")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..profile import format_profile, profile_model

    if args.batch_size < 1 or (args.img_size is not None and args.img_size < 1):
        raise UserError("--batch-size and --img-size must be positive")
    report = profile_model(args.model, img_size=args.img_size, batch_size=args.batch_size)
    print(format_profile(report))
    write_json_report(args.json, report)
    return 0
