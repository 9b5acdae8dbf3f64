"""``bridgeattn compare``: attention variants under one budget, several seeds, one report."""
from __future__ import annotations

import argparse
import json


def _int_list(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="plain,se,eca,bav1,bav2",
                        help="comma-separated short names ({short}_{backbone}) or full model names "
                             "(short: plain,se,eca,cbam,gc,fca,ca,srm,bav1,bav2)")
    parser.add_argument("--backbone", default="resnet20", help="backbone suffix of the short names (default resnet20)")
    parser.add_argument("--data", default="fashion-mnist",
                        help="data spec: fashion-mnist, folder:PATH, cifar10:PATH, cifar100:PATH, synthetic[:N]")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per model (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST .. FIRST+SEEDS-1 (default 0)")
    parser.add_argument("--seed-list", type=_int_list, help="explicit comma-separated seeds (overrides --seeds)")
    parser.add_argument("--epochs", type=int, help="training epochs per cell (engine default if omitted)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--opt", help="optimizer name (timm), e.g. sgd, adamw")
    parser.add_argument("--sched", help="LR schedule (timm), e.g. cosine")
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--train-subset", type=int, help="first N training images (deterministic)")
    parser.add_argument("--val-subset", type=int, help="first N validation images")
    parser.add_argument("--img-size", type=int)
    parser.add_argument("--in-chans", type=int)
    parser.add_argument("--recipe", choices=["light", "imagenet", "none"])
    parser.add_argument("--workers", type=int)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=JSON",
                        help="any other TrainConfig field, e.g. --set smoothing=0.1 (repeatable)")
    parser.add_argument("--output", default="runs/compare", help="output folder (cells and report; resumable)")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="skip the inference img/s measurement")
    parser.add_argument("--progress", action="store_true", help="show the engine's progress bars")
    parser.add_argument("--json", action="store_true", help="print the per-model rows as JSON at the end")


_TRAIN_FLAGS = ("epochs", "batch_size", "lr", "opt", "sched", "warmup_epochs", "weight_decay", "train_subset",
                "val_subset", "img_size", "in_chans", "recipe", "workers")


def run(args: argparse.Namespace) -> int:
    from ..compare import CompareConfig, markdown_table, run_compare
    from ..errors import UserError

    options = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    for item in args.extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip().replace("-", "_")] = value
    if args.seed_list:
        seeds = args.seed_list
    else:
        if args.seeds < 1:
            raise UserError("--seeds must be at least 1")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    cfg = CompareConfig(
        models=args.models.split(","), backbone=args.backbone, data=args.data, seeds=seeds, output=args.output,
        train_options=options, speed=args.speed, progress=args.progress,
    )
    results = run_compare(cfg)
    if args.json:
        print(json.dumps(results["models"], indent=1))
    else:
        print(markdown_table(results["models"]), end="")
        print(f"report: {args.output}/results.md, results.json, results.csv, results.png")
    return 0
