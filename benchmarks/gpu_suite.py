"""The GPU suite: what BAv2 costs against timm's attention ResNet-50s, and whether training on CUDA is sound.

1. Throughput (``bridgeattn.tools.benchmark``: models interleaved round by round, medians): ``resnet50`` (the reference
   of every ratio), ``bav2_resnet50``, ``seresnet50``, ``ecaresnet50d``; train step and inference; AMP bfloat16
   and float16; channels_last; eager and ``torch.compile``; the peak memory of a step.
2. Numerics of the ResNet-20 family (plain, SE, ECA, BAv1, BAv2): the float32 forward on the device against a
   float64 CPU reference of the same weights, and a short Fashion-MNIST training run each (the engine, AMP on).

    python benchmarks/gpu_suite.py                          # one GPU, sized for a 10-minute call
    python benchmarks/gpu_suite.py --device cpu --quick     # tiny sizes, seconds: keeps this script working

Writes ``gpu_suite.json`` (every figure, the machine, the command) and ``gpu_suite.md`` (the tables) to ``--out``.
The numerics run first, then the throughput configurations in priority order; those that would start after
``--budget-s`` are listed as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import bridgeattn
from bridgeattn.files import write_json, write_text
from bridgeattn.tools.benchmark import benchmark, machine_info

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet50", "bav2_resnet50", "seresnet50", "ecaresnet50d")
RESNET20 = ("plain_resnet20", "se_resnet20", "eca_resnet20", "bav1_resnet20", "bav2_resnet20")
# (mode, amp dtype, compiled), most wanted first; inference compiles faster than a train step
CONFIGS = [("train", "bfloat16", False), ("infer", "bfloat16", False), ("train", "float16", False),
           ("infer", "float16", False), ("infer", "bfloat16", True), ("train", "bfloat16", True),
           ("infer", "float16", True), ("train", "float16", True)]


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(img_size=32, train_batch=2, infer_batch=2, repeats=1, steps=1, warmup=1, compile=False)
    return dict(img_size=224, train_batch=128, infer_batch=256, repeats=10, steps=5, warmup=3, compile=True)


def throughput(device: torch.device, quick: bool, deadline: float, say) -> list[dict[str, Any]]:
    """One benchmark per configuration (all models interleaved); skipped entries say why."""
    size = sizes(quick)
    runs = []
    for mode, dtype, compiled in CONFIGS:
        entry: dict[str, Any] = {"mode": mode, "amp_dtype": dtype, "compile": compiled, "channels_last": True}
        if dtype == "float16" and device.type != "cuda":
            entry["skipped"] = "float16 autocast needs CUDA"
        elif compiled and not size["compile"]:
            entry["skipped"] = "torch.compile left out of --quick"
        elif time.monotonic() > deadline:
            entry["skipped"] = "time budget (--budget-s) spent"
        if "skipped" in entry:
            runs.append(entry)
            continue
        say(f"throughput: {mode} {dtype}{' compiled' if compiled else ''}")
        batch = size["train_batch"] if mode == "train" else size["infer_batch"]
        report = benchmark(list(MODELS), batch_size=batch, img_size=size["img_size"], train=mode == "train",
                           channels_last=True, compile=compiled, amp=True, amp_dtype=dtype, repeats=size["repeats"],
                           steps=size["steps"], warmup=size["warmup"], device=device)
        entry.update(batch_size=batch, img_size=size["img_size"], results=report["results"])
        runs.append(entry)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return runs


def forward_error(name: str, device: torch.device, in_chans: int = 1, img_size: int = 28) -> float:
    """Max |float32 logits on ``device`` - float64 CPU logits| over the float64 logits' max magnitude."""
    torch.manual_seed(0)
    model = bridgeattn.create_model(name, num_classes=10, in_chans=in_chans).eval()
    x = torch.randn(8, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.double()(x.double())
        got = model.float().to(device)(x.to(device)).double().cpu()
    return float((got - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


def numerics(device: torch.device, quick: bool, out: Path, say) -> list[dict[str, Any]]:
    """Forward error against float64 and a short training run per ResNet-20 model."""
    from bridgeattn.config import from_flat
    from bridgeattn.engine import train

    data = "synthetic:64" if quick else "fashion-mnist"
    common = dict(data=data, epochs=1 if quick else 2, batch_size=16 if quick else 128, lr=2e-3, warmup_epochs=0,
                  workers=0 if quick else 4, device=str(device), amp=device.type == "cuda", channels_last=True,
                  plots=False, progress=False, download=False)
    if quick:
        common["img_size"] = 16
    else:
        common.update(train_subset=12_800, val_subset=2_000)
    rows = []
    for name in RESNET20:
        say(f"numerics: {name}")
        row: dict[str, Any] = {"model": name, "forward_rel_error_vs_float64": forward_error(name, device)}
        cfg, launch = from_flat({**common, "model": name, "output": str(out / name)})
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                summary = train(cfg, launch)
        except Exception as exc:  # recorded, so the rest of the suite still reports
            row["error"] = f"{type(exc).__name__}: {exc}"
        else:
            row.update({k: summary.get(k) for k in ("top1", "loss", "steps", "train_img_per_s", "skipped_steps")})
            row["finite"] = all(math.isfinite(v) for v in (summary["loss"], summary["top1"]))
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# GPU suite on {m.get('gpu', m['device'])}", "",
             f"`{result['command']}`; torch {m['torch']}, timm {m['timm']}; {result['seconds']:.0f} s.", "",
             "## Throughput (channels_last; ratios: step time over resnet50's in the same interleaved run)", "",
             "| mode | AMP | compiled | model | img/s | time vs resnet50 | peak step MiB |",
             "|---|---|---|---|---|---|---|"]
    for run in result["throughput"]:
        head = f"| {run['mode']} | {run['amp_dtype']} | {'yes' if run['compile'] else 'no'} |"
        if "skipped" in run:
            lines.append(f"{head} (skipped: {run['skipped']}) | | | |")
            continue
        for r in run["results"]:
            peak = f"{r['peak_step_mib']:.0f}" if "peak_step_mib" in r else "n/a"
            lines.append(f"{head} {r['model']} | {r['img_per_s']:.1f} | {r['time_ratio']:.3f} | {peak} |")
    lines += ["", f"## Numerics of the ResNet-20 family ({result['numerics_data']})", "",
              "| model | forward error vs float64 | top-1 | loss | steps | finite |", "|---|---|---|---|---|---|"]
    for r in result["numerics"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['forward_rel_error_vs_float64']:.1e} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {r['model']} | {r['forward_rel_error_vs_float64']:.1e} | {r['top1']:.2f} | {r['loss']:.4f} "
                     f"| {r['steps']} | {'yes' if r['finite'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and synthetic data (seconds on a CPU)")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="start no throughput configuration after this many seconds from the start (default "
                             "300: the numerics, then the eager runs, then compiled ones while time is left; a "
                             "compiled train run of the four models may take several minutes)")
    parser.add_argument("--skip-numerics", action="store_true", help="throughput only")
    parser.add_argument("--out", default=str(ROOT / "docs/results"), help="folder for gpu_suite.json and .md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_suite: CUDA is not available here; use --device cpu --quick", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in the numerics check
        torch.backends.cudnn.allow_tf32 = False
    start = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:5.0f} s] {msg}", file=sys.stderr, flush=True)

    rows: list[dict[str, Any]] = []
    if not args.skip_numerics:  # first: short, and the check that matters most
        with tempfile.TemporaryDirectory() as tmp:
            rows = numerics(device, args.quick, Path(tmp), say)
    runs = throughput(device, args.quick, start + args.budget_s, say)
    result = {
        "command": shlex.join(["python", "benchmarks/gpu_suite.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device),
        "quick": args.quick,
        "seconds": time.monotonic() - start,
        "models": list(MODELS),
        "throughput": runs,
        "numerics_data": "synthetic:64, 16 px" if args.quick else "Fashion-MNIST, 12,800 train / 2,000 val, 2 epochs",
        "numerics": rows,
        "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
    }
    write_json(out / "gpu_suite.json", result)
    write_text(out / "gpu_suite.md", markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
