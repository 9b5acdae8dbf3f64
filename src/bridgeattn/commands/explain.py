"""``bridgeattn explain``: Grad-CAM of a block's taps and the gate statistics of a BA model."""
from __future__ import annotations

import argparse
import sys


def _floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="weights file (.pth/.safetensors) or a training run folder")
    parser.add_argument("--model", help="registered model name (needed when the checkpoint does not say)")
    parser.add_argument("--images", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--block", default="layer2.0", help="residual block to explain (default layer2.0)")
    parser.add_argument("--output", default="runs/explain", help="output folder (default runs/explain)")
    parser.add_argument("--target-class", type=int, help="explain this class instead of each prediction")
    parser.add_argument("--img-size", type=int, help="input size (default: the run's, else the model's)")
    parser.add_argument("--mean", type=_floats, help="normalisation mean, e.g. 0.286 (default: the run's data)")
    parser.add_argument("--std", type=_floats, help="normalisation std (default: the run's data)")
    parser.add_argument("--num-classes", type=int, help="head size when only --model is given")
    parser.add_argument("--in-chans", type=int, help="input channels when only --model is given")
    parser.add_argument("--unsafe-load", action="store_true", help="allow pickles that run code (trusted files)")


def _data_defaults(spec: str, img_size: int | None, in_chans: int | None) -> dict:
    """Mean, std, size and class names of the data set a run was trained on (best effort, offline)."""
    from ..data import DataConfig, build_datasets

    try:
        _, _, info = build_datasets(DataConfig(spec=spec, img_size=img_size, in_chans=in_chans, download=False))
    except Exception as exc:  # data not on this machine: fall back to the model's defaults
        print(f"bridgeattn explain: note: cannot read data set {spec!r} ({exc}); "
              "using the model's normalisation (pass --mean/--std)", file=sys.stderr)
        return {}
    return {"mean": info.mean, "std": info.std, "img_size": info.img_size, "class_names": info.class_names}


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..explain import explain, find_images, load_model

    if not args.checkpoint and not args.model:
        raise UserError("pass --checkpoint PATH and/or --model NAME")
    kwargs = {k: v for k, v in (("num_classes", args.num_classes), ("in_chans", args.in_chans)) if v}
    model, meta = load_model(args.checkpoint, args.model, unsafe=args.unsafe_load, **kwargs)
    data = {}
    if meta.get("data") and not (args.mean and args.std):
        data = _data_defaults(meta["data"], meta.get("img_size"), meta.get("in_chans"))
    files = find_images(args.images)
    report = explain(
        model, files, args.output, args.block, target_class=args.target_class,
        img_size=args.img_size or meta.get("img_size") or data.get("img_size"),
        mean=args.mean or meta.get("mean") or data.get("mean"), std=args.std or meta.get("std") or data.get("std"),
        class_names=data.get("class_names"),
    )
    print(f"{len(report['images'])} Grad-CAM figures in {args.output}/gradcam/")
    if "gate_stats" in report:
        print(f"gate statistics: {report['gate_stats']} (+ {', '.join(report['gate_plots'])})")
    return 0
