"""Validation top-1 of models warm-started from a plain run, before any fine-tuning step.

    python benchmarks/warmstart_step0.py runs/plain --val-subset 5000 --output step0.json

By construction (docs/warmstart.md) every warm-started model evaluates to the plain checkpoint's top-1 and loss.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader

from bridgeattn import from_plain
from bridgeattn.data import DataConfig, build_datasets
from bridgeattn.engine.evaluate import evaluate
from bridgeattn.weights.loading import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a plain_resnet20 run folder (or checkpoint)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--val-subset", type=int, default=5000)
    p.add_argument("--models", default="plain_resnet20,bav2_resnet20,se_resnet20")
    p.add_argument("--output", default="step0.json")
    args = p.parse_args()
    plain = load_model(args.run, build=False).state  # a run folder, checkpoint, hub folder or weights file
    _, val, _ = build_datasets(DataConfig(spec=args.data, val_subset=args.val_subset), splits=("val",))
    loader = DataLoader(val, batch_size=256)
    out = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        metrics = evaluate(from_plain(name, plain), loader)
        out[name] = {"top1": metrics["top1"], "loss": metrics["loss"]}
        print(name, out[name], flush=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
