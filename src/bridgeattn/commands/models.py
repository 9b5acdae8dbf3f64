"""``bridgeattn models``: the registered models with their params and MACs."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'bav2_*' (default: all)")
    parser.add_argument("--family", help="only this family (see --families)")
    parser.add_argument("--families", action="store_true", help="list the model families and exit")
    parser.add_argument("--no-timm", dest="include_timm", action="store_false", help="hide timm's baseline models")
    parser.add_argument("--names-only", action="store_true", help="print names only (fast: no MAC counting)")
    parser.add_argument("--img-size", type=int, help="count MACs at this image size instead of each model's default")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..models import list_models, model_families
    from ..profile import model_cost

    families = model_families()
    if args.families:
        for family, names in families.items():
            print(f"{family:18s} {len(names):3d} models")
        return 0
    names = list_models(args.pattern, include_timm=args.include_timm)
    if args.family:
        if args.family not in families:
            raise UserError(f"unknown family {args.family!r}; known: {', '.join(families)}")
        names = [n for n in names if n in families[args.family]]
    if not names:
        raise UserError(f"no model matches {args.pattern!r}")
    if args.names_only:
        print("\n".join(names))
        return 0
    rows = []
    for name in names:
        size = None
        if args.img_size:
            import timm

            chans = timm.get_pretrained_cfg(name).input_size[0] if timm.get_pretrained_cfg(name) else 3
            size = (chans, args.img_size, args.img_size)
        try:
            rows.append(model_cost(name, size))
        except (AssertionError, RuntimeError, ValueError):
            # Models with a fixed input size (Swin) are rebuilt for the requested one.
            rows.append(model_cost(name, size, img_size=args.img_size))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model':36s} {'params':>12s} {'MACs':>10s}  input")
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"])
        print(f"{r['model']:36s} {r['params']:12,d} {r['macs'] / 1e9:9.3f}G  {size}")
    return 0
