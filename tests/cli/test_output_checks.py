"""Output locations that cannot be written are refused in one line (exit 2) before any work, by every command."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bridgeattn.cli.main import main

TINY = ["--model", "plain_resnet20"]


def _blocked(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An output location that cannot be written: below a file, in /proc, or in a read-only folder."""
    if kind == "below-a-file":
        (tmp_path / "a-file").write_text("not a folder")
        return str(tmp_path / "a-file" / "out")
    if kind == "proc":
        if not sys.platform.startswith("linux"):
            pytest.skip("/proc is Linux's")
        return "/proc/forbidden/out"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes through modes: a read-only file system then
        import errno
        import tempfile

        make = tempfile.mkstemp

        def read_only(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == folder:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
            return make(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    return str(folder / "out")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random plain_resnet20 weights at 16 px for eval and convert."""
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    assert main(["export", *TINY, "--format", "safetensors", "--img-size", "16", "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "a.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(path)
    return path


def _argv(command: str, out: str, weights: Path, image: Path) -> list[str]:
    return {
        "train": ["train", *TINY, "--data", "synthetic:8", "--img-size", "16", "--epochs", "1", "--output", out],
        "eval": ["eval", "--checkpoint", str(weights), *TINY, "--data", "synthetic:8", "--output", out],
        "explain": ["explain", *TINY, "--images", str(image), "--img-size", "16", "--output", out],
        "export": ["export", *TINY, "--format", "safetensors", "--output", out],
        "export-hub": ["export", *TINY, "--format", "hub", "--output", out],
        "convert": ["convert", str(weights), out, "--model", "bav2_resnet20"],
        "compare": ["compare", "--models", "plain", "--seeds", "1", "--data", "synthetic:8", "--img-size", "16",
                    "--epochs", "1", "--output", out],
        "benchmark": ["benchmark", "--models", "plain_resnet20", "--img-size", "16", "--repeats", "1",
                      "--warmup", "0", "--json", out],
        "profile": ["profile", "plain_resnet20", "--img-size", "16", "--json", out],
        "models": ["models", "plain_resnet20", "--json", out],
        "demo": ["demo", "--data", "synthetic:8", "--img-size", "16", "--epochs", "1", "--output", out],
        "shard": ["shard", "--data", "synthetic:8", "--output", out],
    }[command]


@pytest.mark.parametrize("kind", ["below-a-file", "proc", "read-only"])
@pytest.mark.parametrize("command", ["train", "eval", "explain", "export", "export-hub", "convert", "compare",
                                     "benchmark", "profile", "models", "demo", "shard"])
def test_an_unwritable_output_is_one_line_before_any_work(command, kind, tmp_path, weights, image, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default folder (runs/...) would land here
    out = _blocked(kind, tmp_path, monkeypatch)
    before = sorted(tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(_argv(command, out, weights, image)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "out" in lines[0], captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""  # nothing measured or printed and then lost: the check comes first
    assert sorted(tmp_path.rglob("*")) == before  # and nothing written anywhere


def test_an_os_error_on_a_path_is_one_line(monkeypatch, capsys):
    """A path that turns unwritable during the work (disk full, folder removed) is one line, not a traceback."""
    import bridgeattn.cli.commands.profile as profile

    def fail(args):
        raise PermissionError(13, "Permission denied", "/somewhere/report.json")

    monkeypatch.setattr(profile, "run", fail)
    assert main(["profile", "plain_resnet20"]) == 2
    err = capsys.readouterr().err
    assert err == "bridgeattn profile: error: /somewhere/report.json: Permission denied\n"
