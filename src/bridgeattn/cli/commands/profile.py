"""``bridgeattn profile``: params, MACs, per-stage breakdown and training-step activation memory of one model."""
from __future__ import annotations

import argparse

from ..arguments import add_int_argument, add_json_arguments, emit_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name, e.g. bav2_resnet50 or resnet50")
    add_int_argument(parser, "--img-size", "image side (default: the model's own input size)")
    add_int_argument(parser, "--batch-size", "batch of the training step for activation memory", default=8)
    add_json_arguments(parser, "report")


def run(args: argparse.Namespace) -> int:
    from ...models.checks import check_model_input
    from ...tools.profile import format_profile, profile_model

    check_model_input(args.model, args.img_size)  # a size that does not fit: one line naming one that does
    report = profile_model(args.model, img_size=args.img_size, batch_size=args.batch_size)
    emit_json(args, report, format_profile(report))
    return 0
