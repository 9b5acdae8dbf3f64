"""``bridgeattn shard``: write a data set as webdataset tar shards for streaming (train with ``--data wds:DIR``)."""
from __future__ import annotations

import argparse

from ...files import check_writable
from ..arguments import non_negative_int, positive_int, switch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="data set spec to convert: fashion-mnist | folder:PATH | cifar10:PATH | cifar100:PATH | "
                             "synthetic[:N]")
    parser.add_argument("--output", required=True, help="new (or empty) folder for the shards and shards.json")
    parser.add_argument("--shard-size", type=positive_int, default=10_000, metavar="N", help="samples per tar file")
    parser.add_argument("--train-subset", type=positive_int, metavar="N",
                        help="write only the first N training samples")
    parser.add_argument("--val-subset", type=positive_int, metavar="N",
                        help="write only the first N validation samples")
    switch(parser, "--strict-data", "stop at the first unreadable image instead of leaving it out")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                        help="seed of the training samples' order")


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
