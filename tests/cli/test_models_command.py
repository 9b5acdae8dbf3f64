"""`bridgeattn models` and the CLI's error contract (one line, exit status 2, no traceback).

The commands run in-process (``main(argv)``); one smoke test runs ``python -m bridgeattn`` as a user does.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bridgeattn.cli.main import main


@pytest.fixture
def bridgeattn(capsys):
    """``bridgeattn ARGS`` in this process -> CompletedProcess-like (returncode, stdout, stderr)."""

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse errors and --help
            status = exc.code or 0
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["bridgeattn", *args], status, out, err)

    return run


def test_models_lists_params_and_macs(bridgeattn) -> None:
    result = bridgeattn("models", "bav2_resnet5*", "--print-json")
    assert result.returncode == 0, result.stderr
    rows = {r["model"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"bav2_resnet50", "bav2_resnet56"}
    assert rows["bav2_resnet50"]["params"] == 28_702_664
    assert 4.0e9 < rows["bav2_resnet50"]["macs"] < 4.2e9  # ResNet-50 is 4.09 GMACs; the bridge adds ~0.1 %
    table = bridgeattn("models", "bav1_resnet18")
    assert "11,820,552" in table.stdout and "MACs" in table.stdout


def test_unknown_pattern_and_command_errors_are_one_line(bridgeattn) -> None:
    for args in (["models", "nothing_like_this"], ["models", "--family", "nope"]):
        result = bridgeattn(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    result = bridgeattn("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_help_lists_every_command(bridgeattn) -> None:
    result = bridgeattn("--help")
    assert result.returncode == 0
    for command in ("models", "train", "eval", "demo", "compare", "explain", "benchmark", "profile", "export"):
        assert command in result.stdout


def test_python_m_bridgeattn_error_reaches_the_shell() -> None:
    # the one run through the interpreter, as a user does: exit status 2, one line, no traceback
    result = subprocess.run([sys.executable, "-m", "bridgeattn", "train", "--epochs", "abc"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "invalid int value" in result.stderr


def test_models_says_the_channels_and_classes_it_counts_with(bridgeattn) -> None:
    # the README's 280,421 is the Fashion-MNIST model (1 channel, 10 classes); the registered one takes 3 channels
    rows = {}
    for chans in ("3", "1"):
        result = bridgeattn("models", "bav2_resnet20", "--in-chans", chans, "--print-json")
        assert result.returncode == 0, result.stderr
        rows[chans] = json.loads(result.stdout)[0]
    assert (rows["1"]["params"], rows["1"]["input_size"], rows["1"]["num_classes"]) == (280_421, [1, 32, 32], 10)
    assert rows["3"]["params"] == 280_709 and rows["3"]["input_size"] == [3, 32, 32]
    table = bridgeattn("models", "bav2_resnet20", "--num-classes", "100").stdout.splitlines()
    assert table[0].split()[-2:] == ["CxHxW", "classes"] and table[1].split()[-2:] == ["3x32x32", "100"]
