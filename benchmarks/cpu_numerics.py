"""Which CPU numerics train the demo models fastest on this machine: float32 or bf16 autocast, NCHW or channels_last.

Times a training step of ``bav2_resnet20`` and ``plain_resnet20`` on Fashion-MNIST-shaped batches (128 x 1 x 28 x 28)
with ``bridgeattn.tools.benchmark`` (both models interleaved, medians), once per memory format,
with and without ``--amp``.
``--amp`` follows the library's policy (``bridgeattn/engine/hardware.py``): bf16 only on CPUs with native bf16, so
on other CPUs (or under ``BRIDGEATTN_NO_NATIVE_BF16=1``) the amp rows say "float32" and repeat the float32 ones.

    OMP_NUM_THREADS=2 python benchmarks/cpu_numerics.py                          # this machine
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 BRIDGEATTN_NO_NATIVE_BF16=1 \\
        OMP_NUM_THREADS=2 python benchmarks/cpu_numerics.py                      # an AVX2-only CPU, emulated

Prints a table and, with ``--json OUT``, writes every round's time and the machine.
"""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import torch

import bridgeattn
from bridgeattn.engine.hardware import cpu_has_native_bf16
from bridgeattn.files import write_json
from bridgeattn.tools.benchmark import benchmark

MODELS = ("bav2_resnet20", "plain_resnet20")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (median)")
    parser.add_argument("--steps", type=int, default=2, help="train steps per round")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's, or OMP_NUM_THREADS)")
    parser.add_argument("--precision", choices=("both", "float32", "amp"), default="both",
                        help="float32, --amp (the policy's choice) or both rows")
    parser.add_argument("--memory-format", choices=("both", "nchw", "channels_last"), default="both")
    parser.add_argument("--json", metavar="OUT", help="write every round and the machine to OUT")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = {name: partial(bridgeattn.create_model, name, num_classes=10, in_chans=1) for name in MODELS}
    print(f"ISA {torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_native_bf16()}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"load average {os.getloadavg()[0]:.1f}; train step, batch {args.batch_size}, 1 x 28 x 28; img/s (median)")
    print(f"{'precision':10s} {'memory format':14s} " + " ".join(f"{m:>15s}" for m in MODELS))
    reports = []
    amps = {"both": (False, True), "float32": (False,), "amp": (True,)}[args.precision]
    formats = {"both": (False, True), "nchw": (False,), "channels_last": (True,)}[args.memory_format]
    for amp in amps:
        for channels_last in formats:
            report = benchmark(specs, batch_size=args.batch_size, img_size=28, train=True, channels_last=channels_last,
                               amp=amp, repeats=args.repeats, steps=args.steps)
            reports.append(report)
            cells = " ".join(f"{r['img_per_s']:15.0f}" for r in report["results"])
            print(f"{report['settings']['amp_dtype']:10s} {'channels_last' if channels_last else 'NCHW':14s} {cells}",
                  flush=True)
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "reports": reports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
