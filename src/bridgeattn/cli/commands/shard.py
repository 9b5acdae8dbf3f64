"""``bridgeattn shard``: write a data set as webdataset tar shards for streaming (train with ``--data wds:DIR``)."""
from __future__ import annotations

import argparse

from ...files import check_writable
from ..arguments import add_int_argument, non_negative_int, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="data set spec to convert: fashion-mnist | folder:PATH | "
                        "cifar10:PATH | cifar100:PATH | synthetic[:N]")
    parser.add_argument("--output", required=True, help="new (or empty) folder for the shards and shards.json")
    add_int_argument(parser, "--shard-size", "samples per tar file", default=10_000)
    add_int_argument(parser, "--train-subset", "write only the first N training samples")
    add_int_argument(parser, "--val-subset", "write only the first N validation samples")
    switch(parser, "--strict-data", "stop at the first unreadable image instead of leaving it out")
    add_int_argument(parser, "--seed", "seed of the training samples' order", default=0, check=non_negative_int)


def run(args: argparse.Namespace) -> int:
    from ...data import DataConfig
    from ...data.shard_writer import write_shards

    check_writable(args.output, folder=True)  # before the data set is read
    cfg = DataConfig(spec=args.data, train_subset=args.train_subset, val_subset=args.val_subset,
                     strict=args.strict_data, download=False)
    meta = write_shards(cfg, args.output, shard_size=args.shard_size, seed=args.seed)
    for split in ("train", "val"):
        print(f"{split}: {meta[split]['samples']} samples in {len(meta[split]['shards'])} shard(s)")
    print(f"wrote {args.output} (train with --data wds:{args.output})")
    return 0
