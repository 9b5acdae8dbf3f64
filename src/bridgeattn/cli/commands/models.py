"""``bridgeattn models``: the registered models with their params and MACs, one row as soon as it is counted."""
from __future__ import annotations

import argparse

from ...errors import UserError
from ..arguments import add_int_argument, add_json_arguments, emit_json, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'bav2_*' (default: all)")
    parser.add_argument("--family", help="only this family (see --families)")
    parser.add_argument("--families", action="store_true", help="list the model families and exit")
    switch(parser, "--timm", "include timm's baseline models (--no-timm hides them)", default=True)
    parser.add_argument("--names-only", action="store_true", help="print names only (fast: no MAC counting)")
    add_int_argument(parser, "--img-size", "count MACs at this image size (default: each model's own)")
    add_int_argument(parser, "--in-chans",
                     "count with this many input channels, 1 for Fashion-MNIST (default: each model's own)")
    add_int_argument(parser, "--num-classes", "count with this classifier size (default: each model's own)")
    add_json_arguments(parser, "rows")


def _cost(name: str, img_size: int | None, **shape: int) -> dict:
    """``model_cost`` and the classes it counted with; ``shape``: the ``in_chans``/``num_classes`` asked for."""
    import timm

    from ...tools.profile import model_cost

    cfg = timm.get_pretrained_cfg(name)
    own = cfg.input_size if cfg and cfg.input_size else (3, 224, 224)
    size = (shape.get("in_chans", own[0]), *((img_size, img_size) if img_size else own[1:]))
    classes = {"num_classes": shape.get("num_classes", cfg.num_classes if cfg else 1000)}
    try:
        return {**model_cost(name, size, **shape), **classes}
    except (AssertionError, RuntimeError, ValueError) as first:
        try:  # models with a fixed input size (Swin) are rebuilt for the requested one
            return {**model_cost(name, size, img_size=img_size, **shape), **classes}
        except (AssertionError, RuntimeError, ValueError, TypeError):
            from ...models.checks import check_model_input

            check_model_input(name, img_size)  # names a size that fits
            detail = str(first).splitlines()[0] if str(first) else type(first).__name__
            raise UserError(f"{name} cannot take {img_size} px input ({detail})") from None


def run(args: argparse.Namespace) -> int:
    from ...models import list_models, model_families

    families = model_families()
    if args.families:
        for family, names in families.items():
            print(f"{family:18s} {len(names):3d} models")
        return 0
    names = list_models(args.pattern, include_timm=args.timm)
    if args.family:
        if args.family not in families:
            raise UserError(f"unknown family {args.family!r}; known: {', '.join(families)}")
        names = [n for n in names if n in families[args.family]]
    if not names:
        raise UserError(f"no model matches {args.pattern!r}")
    if args.names_only:
        print("\n".join(names))
        return 0
    table = not args.print_json
    if table:
        print(f"{'model':36s} {'params':>12s} {'MACs':>10s}  {'input CxHxW':12s} classes", flush=True)
    rows = []
    for name in names:
        shape = {k: v for k, v in (("in_chans", args.in_chans), ("num_classes", args.num_classes)) if v}
        row = _cost(name, args.img_size, **shape)
        rows.append(row)
        if table:  # each row as soon as it is counted: a full listing takes a while
            size = "x".join(str(s) for s in row["input_size"])
            print(f"{row['model']:36s} {row['params']:12,d} {row['macs'] / 1e9:9.3f}G  {size:12s} {row['num_classes']}",
                  flush=True)
    emit_json(args, rows)
    return 0
