"""How fast the command line answers, beside ``python -c "import timm"`` on the same machine.

Each round runs every command once, in turn (interleaved, so that a busy machine slows all alike); the medians
over the rounds and each command's difference to ``import timm`` are printed and written as JSON, in wall-clock
seconds and in CPU seconds (user + system, which other jobs on a loaded machine inflate less). The bad-path
commands must exit 2 (one line on stderr) without building a model or touching the disk.

    PYTHONPATH=src python benchmarks/cli_startup.py --rounds 5 --out docs/results/cli_startup.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
MISSING = "/nonexistent/bridgeattn-bench"


def commands(tmp: str) -> dict[str, tuple[list[str], int]]:
    """label -> (argv, expected exit status)."""
    cli = [PY, "-m", "bridgeattn"]  # the console script's code path, also in a clone that was never installed
    return {
        "python -c 'import timm'": ([PY, "-c", "import timm"], 0),
        "bridgeattn --help": ([*cli, "--help"], 0),
        "bridgeattn train --help": ([*cli, "train", "--help"], 0),
        "bridgeattn train --lr-rate 0.1": ([*cli, "train", "--lr-rate", "0.1"], 2),
        "bridgeattn convert /nope.pth out.safetensors": (
            [*cli, "convert", f"{MISSING}.pth", f"{tmp}/out.safetensors", "--model", "bav2_resnet20"], 2),
        "bridgeattn eval --checkpoint /nope": ([*cli, "eval", "--checkpoint", MISSING], 2),
        "bridgeattn export --checkpoint /nope": (
            [*cli, "export", "--checkpoint", MISSING, "--format", "onnx", "--output", f"{tmp}/m.onnx"], 2),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(argv: list[str]) -> tuple[float, float, int, str]:
    """Wall and CPU seconds, exit status and the last line of stderr of one run."""
    start, cpu = time.perf_counter(), _cpu()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    seconds, cpu = time.perf_counter() - start, _cpu() - cpu
    return seconds, cpu, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians reported (default: 5)")
    parser.add_argument("--out", default="cli_startup.json", help="JSON file to write (default: cli_startup.json)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        table = commands(tmp)
        times: dict[str, list[float]] = {label: [] for label in table}
        cpus: dict[str, list[float]] = {label: [] for label in table}
        errors: dict[str, str] = {}
        for round_ in range(args.rounds):
            for label, (command, expected) in table.items():
                seconds, cpu, code, last = time_once(command)
                if code != expected:
                    raise SystemExit(f"{label}: exit status {code}, expected {expected}: {last}")
                times[label].append(seconds)
                cpus[label].append(cpu)
                if expected:
                    errors[label] = last
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        leftovers = sorted(os.listdir(tmp))
    if leftovers:
        raise SystemExit(f"the bad-path commands wrote {leftovers}")
    timm = "python -c 'import timm'"
    base, cpu_base = statistics.median(times[timm]), statistics.median(cpus[timm])
    median = statistics.median
    rows = [{"command": label, "median_s": median(ts), "over_timm_s": median(ts) - base,
             "cpu_median_s": median(cpus[label]), "cpu_over_timm_s": median(cpus[label]) - cpu_base,
             "runs_s": ts, "cpu_runs_s": cpus[label], "stderr": errors.get(label)} for label, ts in times.items()]
    print(f"{'command':48s} {'wall':>8s} {'- timm':>8s} {'CPU':>8s} {'- timm':>8s}  (medians)")
    for r in rows:
        print(f"{r['command']:48s} {r['median_s']:7.2f}s {r['over_timm_s']:+7.2f}s {r['cpu_median_s']:7.2f}s "
              f"{r['cpu_over_timm_s']:+7.2f}s")
    command = "PYTHONPATH=src python benchmarks/cli_startup.py " + " ".join(sys.argv[1:] if argv is None else argv)
    Path(args.out).write_text(json.dumps({
        "rows": rows, "rounds": args.rounds, "python": sys.version.split()[0], "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "command": command}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
