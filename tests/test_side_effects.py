"""The library leaves global state as it found it: matplotlib's backend, dynamo's limits, cuDNN flags; it logs."""
from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

import torch

import bridgeattn
from bridgeattn.engine.train import deterministic_algorithms
from bridgeattn.tools.benchmark import _compile_limits

SRC = Path(bridgeattn.__file__).parent


def test_plots_keep_the_users_matplotlib_backend(tmp_path: Path) -> None:
    code = f"""
import sys, matplotlib
matplotlib.use("pdf")
from pathlib import Path
from bridgeattn.engine.plots import plot_confusion, plot_curves
from bridgeattn.tools.compare import plot_chart
out = Path({str(tmp_path)!r})
plot_curves([{{"epoch": 1, "train_loss": 1.0, "loss": 1.1, "top1": 50.0, "lr": 0.1}}], out / "c.png")
plot_confusion([[3, 1], [0, 4]], ["a", "b"], out / "m.png")
plot_chart([{{"model": "bav2_resnet20", "name": "bav2", "top1_mean": 90.0, "params": 1e6, "macs": 1e8}}], out / "r.png")
assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    for name in ("c.png", "m.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def printing_sites(root: Path) -> list[str]:
    """Where code under ``root`` writes to the terminal itself: ``print`` called or passed as a value
    (``log=print``), ``tqdm.write``, ``sys.stdout.write`` / ``sys.stderr.write``."""
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            hit = isinstance(node, ast.Name) and node.id == "print"
            if isinstance(node, ast.Attribute) and node.attr == "write":
                owner = node.value
                owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                hit = owner_name in ("tqdm", "stdout", "stderr")
            if hit:
                found.append(f"{path.relative_to(root).as_posix()}:{node.lineno}")
    return found


def test_no_backend_switch_and_no_pyplot_in_the_package() -> None:
    offenders = [p.name for p in SRC.rglob("*.py")
                 if any(s in p.read_text() for s in ("matplotlib.pyplot", "matplotlib.use(", "import pyplot"))]
    assert offenders == []


def test_library_logs_instead_of_printing() -> None:
    """Only the command line (``cli/``) prints; the library logs."""
    assert [c for c in printing_sites(SRC) if not c.startswith("cli/")] == []
    assert sys.modules["bridgeattn.engine.train"].log is logging.getLogger("bridgeattn.engine.train")


def test_the_print_guard_sees_print_as_a_default_and_tqdm_write(tmp_path: Path) -> None:
    (tmp_path / "planted.py").write_text("import sys\nfrom tqdm import tqdm\n\n"
                                         "def report(log=print):\n    tqdm.write('x')\n    sys.stderr.write('y')\n")
    assert printing_sites(tmp_path) == ["planted.py:4", "planted.py:5", "planted.py:6"]


def test_training_restores_cudnn_and_determinism_flags() -> None:
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
              torch.are_deterministic_algorithms_enabled())
    for enabled in (True, False):
        with deterministic_algorithms(enabled):
            assert torch.backends.cudnn.deterministic is enabled and torch.backends.cudnn.benchmark is not enabled
        after = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
                 torch.are_deterministic_algorithms_enabled())
        assert after == before


def test_benchmark_restores_dynamo_limits() -> None:
    import torch._dynamo as dynamo

    key = "recompile_limit" if hasattr(dynamo.config, "recompile_limit") else "cache_size_limit"
    before = getattr(dynamo.config, key)
    with _compile_limits(True):
        assert getattr(dynamo.config, key) == max(64, before)
    assert getattr(dynamo.config, key) == before
