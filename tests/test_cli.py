"""The command line's conventions: fast help without torch, one-line errors, the same flags everywhere."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridgeattn.cli import COMMANDS, main

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_version_import_no_torch():
    # every command's --help, the top-level --help and --version in one fresh interpreter
    code = f"""
import sys
from bridgeattn.cli import main
for argv in [["--help"], ["--version"], *[[c, "--help"] for c in {sorted(COMMANDS)!r}]]:
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)
heavy = sorted(m for m in ("torch", "timm", "torchvision", "numpy", "matplotlib") if m in sys.modules)
print("HEAVY", heavy)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout
    assert "bridgeattn 0." in result.stdout  # --version, from the package metadata


def test_importing_the_package_still_registers_the_models_with_timm():
    result = _python("import sys, bridgeattn; assert 'torch' not in sys.modules; import timm; "
                     "print(timm.is_model('bav2_resnet20'), type(timm.create_model('bav2_resnet20')).__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "BridgeResNet"]
    after = _python("import timm, bridgeattn; print(timm.is_model('bav1_resnet50'))")
    assert after.stdout.strip() == "True", after.stderr[-2000:]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bridgeattn {command}")
    assert "(default: None)" not in out  # a default is shown when it says something
