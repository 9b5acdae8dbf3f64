"""``bridgeattn eval``: score saved weights; a training run's stored accuracy is reproduced."""
from __future__ import annotations

import argparse

from ...files import check_writable
from ..arguments import (
    add_device_argument,
    add_int_argument,
    add_json_arguments,
    add_weights_arguments,
    emit_json,
    non_negative_int,
    switch,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(parser, "a run folder (its newest checkpoint that passes its checksum), a checkpoint "
                                  "file, a .safetensors file or a saved model folder", required=True)
    parser.add_argument("--data", help="dataset spec to evaluate on (default: the run's own; needed for plain weights)")
    add_int_argument(parser, "--val-subset", "first N validation samples (default: as in training; 0: all)", default=-1,
                     check=non_negative_int)
    add_int_argument(parser, "--batch-size", "eval batch size (default: as in training)")
    add_int_argument(parser, "--workers", "data loader workers", default=0, check=non_negative_int)
    switch(parser, "--ema", "evaluate the EMA weights instead of the model's")
    add_device_argument(parser)
    parser.add_argument("--output", metavar="DIR", help="where to write eval.json, per_class.csv, confusion.png "
                        "(default: RUN/eval)")
    switch(parser, "--plots", "write confusion.png", default=True)
    switch(parser, "--progress", "progress bar", default=True)
    add_json_arguments(parser, "metrics")


def run(args: argparse.Namespace) -> int:
    from ...tools.score import evaluate_checkpoint

    if args.output:
        check_writable(args.output, folder=True)  # the default (next to the weights) is checked once known
    result = evaluate_checkpoint(args.checkpoint, data=args.data, batch_size=args.batch_size, workers=args.workers,
                                 val_subset=None if args.val_subset == 0 else args.val_subset, use_ema=args.ema,
                                 device=args.device, unsafe=args.unsafe_load, output=args.output, plots=args.plots,
                                 progress=args.progress, model=args.model)
    epoch = f", epoch {result['epoch']}" if result["epoch"] is not None else ""
    lines = [f"{result['model']} ({result['weights']} weights{epoch}) on {result['data']}: top-1 {result['top1']:.2f} "
             f"%  top-5 {result['top5']:.2f} %  loss {result['loss']:.4f}  ({result['count']} images)"]
    stored = result["stored_top1"]
    if stored is not None and args.data is None:
        samples = result.get("stored_val_samples")
        if samples is not None and samples != result["count"]:
            same = f"on {samples} images: not comparable with these {result['count']}"
        else:
            same = "reproduced" if abs(stored - result["top1"]) < 1e-9 else f"differs by {result['top1'] - stored:+.2f}"
        where = ""
        if result.get("stored_subset"):
            where = f" on a subset: the first {samples} validation images" if samples else " on a validation subset"
        lines.append(f"stored at training time: top-1 {stored:.2f} %{where} ({same})")
    lines.append(f"report: {result['output']} (eval.json, per_class.csv" + (", confusion.png)" if args.plots else ")"))
    emit_json(args, {k: v for k, v in result.items() if k != "confusion"}, "\n".join(lines))
    return 0
