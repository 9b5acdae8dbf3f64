"""`bridgeattn models` and the CLI's error contract (one line, non-zero exit, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys


def bridgeattn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridgeattn", *args], capture_output=True, text=True, timeout=300)


def test_models_lists_params_and_macs() -> None:
    result = bridgeattn("models", "bav2_resnet5*", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"bav2_resnet50", "bav2_resnet56"}
    assert rows["bav2_resnet50"]["params"] == 28_702_664
    assert 4.0e9 < rows["bav2_resnet50"]["macs"] < 4.2e9  # ResNet-50 is 4.09 GMACs; the bridge adds ~0.1 %
    table = bridgeattn("models", "bav1_resnet18")
    assert "11,820,552" in table.stdout and "MACs" in table.stdout


def test_unknown_pattern_and_command_errors_are_one_line() -> None:
    for args in (["models", "nothing_like_this"], ["models", "--family", "nope"]):
        result = bridgeattn(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = bridgeattn("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_help_lists_every_command() -> None:
    result = bridgeattn("--help")
    assert result.returncode == 0
    for command in ("models", "train", "eval", "demo", "compare", "explain", "benchmark", "profile", "export"):
        assert command in result.stdout
