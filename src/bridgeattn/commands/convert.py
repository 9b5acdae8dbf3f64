"""``bridgeattn convert``: a reference BA-Net checkpoint -> safetensors weights for one of our models."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="reference checkpoint (.pth/.pth.tar/.safetensors)")
    parser.add_argument("output", help="where to write the converted weights (.safetensors)")
    parser.add_argument("--model", required=True, help="target model, e.g. bav2_resnet50 or bav1_resnet101")
    parser.add_argument(
        "--from", dest="version", choices=("bav1", "bav2", "auto"), default="auto",
        help="reference implementation the checkpoint comes from (default: detect from its keys)",
    )
    parser.add_argument("--num-classes", type=int, help="classifier size (default: rows of the checkpoint's fc)")
    parser.add_argument(
        "--unsafe-load", action="store_true",
        help="allow full pickles that may run code (only for files from a trusted source)",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ..export import convert_checkpoint

    summary = convert_checkpoint(
        args.input, args.output, args.model, version=args.version, unsafe=args.unsafe_load,
        num_classes=args.num_classes,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"converted {args.input} ({summary['layout']} layout, {summary['tensors']} tensors) -> "
            f"{summary['output']}; loads strictly into {summary['model']} (num_classes={summary['num_classes']})"
        )
    return 0
