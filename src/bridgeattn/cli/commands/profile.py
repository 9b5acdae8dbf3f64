"""``bridgeattn profile``: params, MACs, per-stage breakdown and training-step activation memory of one model."""
from __future__ import annotations

import argparse

from ..arguments import add_json_arguments, emit_json, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name, e.g. bav2_resnet50 or resnet50")
    parser.add_argument("--img-size", type=positive_int, metavar="N",
                        help="image side (default: the model's own input size)")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                        help="batch of the training step for activation memory")
    add_json_arguments(parser, "report")


def run(args: argparse.Namespace) -> int:
    from ...models.checks import check_model_input
    from ...tools.profile import format_profile, profile_model

    check_model_input(args.model, args.img_size)  # a size that does not fit: one line naming one that does
    report = profile_model(args.model, img_size=args.img_size, batch_size=args.batch_size)
    emit_json(args, report, format_profile(report))
    return 0
