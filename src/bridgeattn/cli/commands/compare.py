"""``bridgeattn compare``: attention variants under one budget (``bridgeattn train``'s flags and ``--config``),
several seeds, one report; ``--models`` and the seeds pick the cells."""
from __future__ import annotations

import argparse

from ...config import add_train_arguments, flags_given, listed, load_yaml, make_config, resolve_config_path
from ...files import check_writable
from ..arguments import add_int_argument, add_json_arguments, emit_json, non_negative_int, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", action=listed(), default=["plain", "se", "eca", "bav1", "bav2"],
                        metavar="MODEL", help="short names ({short}_{backbone}) or full model names, comma- or space-"
                        "separated (short: plain,se,eca,cbam,gc,fca,ca,srm,bav1,bav2; default: plain,se,eca,bav1,bav2)")
    parser.add_argument("--backbone", default="resnet20", help="backbone suffix of the short names")
    add_int_argument(parser, "--seeds", "number of seeds per model", default=3)
    add_int_argument(parser, "--first-seed", "seeds are FIRST .. FIRST+SEEDS-1", default=0,
                     check=non_negative_int)
    parser.add_argument("--seed-list", nargs="+", action=listed(non_negative_int), metavar="SEED",
                        help="explicit seeds, e.g. 0,1,2 (overrides --seeds)")
    parser.add_argument("--output", default="runs/compare", help="comparison folder: cells and report; a rerun "
                        "continues it")
    switch(parser, "--speed", "measure inference img/s", default=True)
    switch(parser, "--progress", "show the engine's progress bars", default=True)
    add_json_arguments(parser, "per-model rows")
    add_train_arguments(parser, launch=False, exclude=("model", "seed"),
                        config_help="recipe (name under configs/ or a YAML file) for every cell's training")


def run(args: argparse.Namespace) -> int:
    from ...tools.compare import CompareConfig, findings, markdown_table, run_compare

    check_writable(args.output, folder=True)  # before any cell trains
    recipe = load_yaml(resolve_config_path(args.config)) if getattr(args, "config", None) else {}
    options = {k: v for k, v in {**recipe, **flags_given(args)}.items() if k not in ("model", "seed")}
    data = make_config(options).validate().data.spec  # the whole budget is checked before any cell trains
    options.pop("data", None)
    seeds = args.seed_list or list(range(args.first_seed, args.first_seed + args.seeds))
    cfg = CompareConfig(models=args.models, backbone=args.backbone, data=data, seeds=seeds, output=args.output,
                        train_options=options, speed=args.speed, progress=args.progress)
    rows = run_compare(cfg)["models"]
    table = markdown_table(rows) + "\n".join(findings(rows))
    emit_json(args, rows, f"{table}\nreport: {args.output}/results.md, results.json, results.csv, results.png")
    return 0
