"""What Bridge Attention costs on top of ResNet-50: BAv2 (ours, eager and fused) vs timm resnet50 / seresnet50
vs a naive BAv2 written the way the reference implementation is structured.

Every configuration (batch size x train step / inference x eager / compiled) is one interleaved
``bridgeattn.tools.benchmark`` run; ratios are step times over timm ``resnet50`` in that run.

    OMP_NUM_THREADS=2 python benchmarks/overhead.py                    # the full table (CPU, fp32)
    python benchmarks/overhead.py --batch-sizes 2 --repeats 3 --no-compile --out /tmp/o.json   # a smoke run

Writes ``docs/results/overhead.json`` (every round's time, the machine, the command) and prints the table.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from timm.models.resnet import Bottleneck, ResNet

import bridgeattn
from bridgeattn.files import write_json
from bridgeattn.tools.benchmark import benchmark, format_table, machine_info

ROOT = Path(__file__).resolve().parents[1]


class NaiveBridge(nn.Module):
    """BAv2 as the reference structures it: a pool, a Linear per tap, stack + Linear(n, 1) selection,
    BatchNorm1d, ReLU, Linear and sigmoid, each a separate module and pass."""

    def __init__(self, in_channels: list[int], channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.pools = nn.ModuleList([nn.AdaptiveAvgPool2d(1) for _ in in_channels])
        self.fusions = nn.ModuleList([nn.Sequential(nn.Linear(c, hidden, bias=False)) for c in in_channels])
        self.proj = nn.Linear(len(in_channels), 1)
        self.generation = nn.Sequential(
            nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=False)
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        z = torch.stack([fc(pool(m).flatten(1)) for pool, fc, m in zip(self.pools, self.fusions, maps)], dim=-1)
        u = self.proj(z).squeeze(-1)
        return self.sigmoid(self.generation(u))[:, :, None, None]


class NaiveBABottleneck(Bottleneck):
    """timm's Bottleneck with the naive bridge: three pools, then a separate multiply and add."""

    def __init__(self, inplanes: int, planes: int, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("attn_layer", None)
        super().__init__(inplanes, planes, *args, **kwargs)
        taps = [self.bn1.num_features, self.bn2.num_features, self.bn3.num_features]
        self.ba = NaiveBridge(taps, self.bn3.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y1 = self.act1(self.bn1(self.conv1(x)))
        y2 = self.act2(self.bn2(self.conv2(y1)))
        y3 = self.bn3(self.conv3(y2))
        out = y3 * self.ba([y1, y2, y3])
        out = out + shortcut
        return self.act3(out)


def naive_bav2_resnet50() -> nn.Module:
    return ResNet(block=NaiveBABottleneck, layers=(3, 4, 6, 3))


def fused_bav2_resnet50() -> nn.Module:
    return bridgeattn.fuse(bridgeattn.create_model("bav2_resnet50").eval())


def model_set(train: bool) -> dict[str, Any]:
    models: dict[str, Any] = {"resnet50": "resnet50", "seresnet50": "seresnet50", "bav2_resnet50": "bav2_resnet50"}
    if not train:
        models["bav2_resnet50 (fused)"] = fused_bav2_resnet50
    models["naive BAv2-ResNet-50"] = naive_bav2_resnet50
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="8,32", help="comma-separated batch sizes (eager)")
    parser.add_argument("--compile-batch-sizes", default="8", help="batch sizes for the torch.compile runs")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="eager runs only")
    parser.add_argument("--modes", default="train,infer", help="train, infer or both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as set)")
    parser.add_argument("--out", default=str(ROOT / "docs/results/overhead.json"))
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables of one train step instead")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        bs = int(args.batch_sizes.split(",")[0])
        for name in ("resnet50", "bav2_resnet50"):
            print(f"{name}, train step, batch {bs}, {args.img_size} px")
            print(profile_table(name, bs, args.img_size))
        return 0
    assert sum(p.numel() for p in naive_bav2_resnet50().parameters()) == 28_702_664  # docs/spec.md, section 4

    configs = []
    for compiled, sizes in ((False, args.batch_sizes), (True, args.compile_batch_sizes if args.compile else "")):
        for bs in [int(b) for b in sizes.split(",") if b]:
            for mode in [m for m in args.modes.split(",") if m]:
                configs.append((compiled, bs, mode == "train"))
    runs = []
    started = time.time()
    for compiled, bs, train in configs:
        t0 = time.time()
        report = benchmark(
            model_set(train), batch_size=bs, img_size=args.img_size, train=train, compile=compiled,
            amp=args.amp, channels_last=args.channels_last, repeats=args.repeats, warmup=args.warmup,
            device=args.device, progress=partial(print, file=sys.stderr, flush=True),
        )
        report["wall_s"] = time.time() - t0
        runs.append(report)
        print(format_table(report), flush=True)
        print(flush=True)
    summary = summarise(runs)
    print(summary)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/overhead.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "machine": machine_info(torch.device(args.device)),
        "wall_s": time.time() - started,
        "runs": runs,
        "table": summary,
    }
    write_json(out, result)
    print(f"wrote {out}")
    return 0


def profile_table(name: str, batch_size: int, img_size: int, rows: int = 14) -> str:
    """torch.profiler's self-time table of two train steps (after one untimed step)."""
    from torch.profiler import ProfilerActivity, profile

    model = bridgeattn.create_model(name).train()
    x = torch.randn(batch_size, 3, img_size, img_size)
    target = torch.randint(0, 1000, (batch_size,))

    def step() -> None:
        torch.nn.functional.cross_entropy(model(x), target).backward()
        model.zero_grad(set_to_none=True)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
        step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40)


def summarise(runs: list[dict[str, Any]]) -> str:
    """One markdown table: rows are models, columns are configurations, cells are time ratios to resnet50."""
    columns, cells, models = [], {}, []
    for run in runs:
        s = run["settings"]
        col = f"{'train' if s['train'] else 'infer'} b{s['batch_size']}{' compiled' if s['compile'] else ''}"
        columns.append(col)
        for r in run["results"]:
            if r["model"] not in models:
                models.append(r["model"])
            cells[(r["model"], col)] = r["time_ratio"]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for m in models:
        row = [f"{cells[(m, c)]:.3f}" if (m, c) in cells else "-" for c in columns]
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    base = ["| resnet50 ms/step |"]
    for run in runs:
        base.append(f" {run['results'][0]['step_ms']:.0f} |")
    lines.append("".join(base))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
