"""``bridgeattn explain``: Grad-CAM of a block's taps and the gate statistics of a BA model."""
from __future__ import annotations

import argparse

from ...config import listed
from ...files import check_writable
from ..arguments import add_int_argument, add_weights_arguments, model_from_args, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_weights_arguments(parser, "a run folder, checkpoint, weights file or saved model folder")
    parser.add_argument("--images", nargs="+", required=True, metavar="PATH",
                        help="image files and/or folders (space-separated, so shell globs work)")
    parser.add_argument("--block", default="layer2.0", help="residual block to explain")
    parser.add_argument("--output", default="runs/explain", help="output folder")
    parser.add_argument("--target-class", type=int, metavar="N", help="explain this class instead of each prediction")
    add_int_argument(parser, "--img-size", "input size (default: the weights', else the model's)")
    parser.add_argument("--mean", nargs="+", action=listed(float), metavar="X",
                        help="normalisation mean, e.g. 0.286 or 0.485,0.456,0.406 (default: the run's data)")
    parser.add_argument("--std", nargs="+", action=listed(float), metavar="X",
                        help="normalisation std (default: the run's data)")
    add_int_argument(parser, "--num-classes", "head size when only --model is given")
    add_int_argument(parser, "--in-chans", "input channels when only --model is given")
    switch(parser, "--overwrite", "replace an earlier explain report in --output (default: refuse)")


def run(args: argparse.Namespace) -> int:
    from ...tools.explain import check_output, explain, find_images

    if args.overwrite:
        check_writable(args.output, folder=True)  # before any work; the earlier report goes once the new one is made
    else:
        check_output(args.output)  # refuses an earlier report and an unwritable --output, before any work
    files = find_images(args.images)
    model, loaded = model_from_args(args)
    report = explain(model, files, args.output, args.block, target_class=args.target_class, img_size=args.img_size,
                     mean=args.mean, std=args.std, class_names=loaded and loaded.class_names, overwrite=args.overwrite)
    print(f"{len(report['images'])} Grad-CAM figures in {args.output}/gradcam/")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} unreadable image(s) (list in {args.output}/skipped_files.txt)")
    if "gate_stats" in report:
        print(f"gate statistics: {report['gate_stats']} (+ {', '.join(report['gate_plots'])})")
        print(f"gates: {report['gate_summary']}")
    return 0
