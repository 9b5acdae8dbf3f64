"""``bridgeattn convert``: a reference BA-Net checkpoint -> safetensors weights for one of our models."""
from __future__ import annotations

import argparse

from ...files import check_writable
from ..arguments import add_int_argument, add_json_arguments, emit_json, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="reference checkpoint (.pth/.pth.tar/.safetensors)")
    parser.add_argument("output", help="where to write the converted weights (.safetensors)")
    parser.add_argument("--model", required=True, help="target model, e.g. bav2_resnet50 or bav1_resnet101")
    parser.add_argument("--from", dest="version", choices=("bav1", "bav2", "auto"), default="auto",
                        help="reference implementation the checkpoint comes from (default: detect from its keys)")
    add_int_argument(parser, "--num-classes", "classifier size (default: rows of the checkpoint's fc)")
    switch(parser, "--unsafe-load", "allow full pickles that may run code (only for files from a trusted source)")
    add_json_arguments(parser, "summary")


def run(args: argparse.Namespace) -> int:
    from ...weights.export import convert_checkpoint

    check_writable(args.output, flag="output")
    summary = convert_checkpoint(args.input, args.output, args.model, version=args.version, unsafe=args.unsafe_load,
                                 num_classes=args.num_classes)
    emit_json(args, summary, f"converted {args.input} ({summary['layout']} layout, {summary['tensors']} tensors) -> "
                             f"{summary['output']}; loads strictly into {summary['model']} "
                             f"(num_classes={summary['num_classes']})")
    return 0
