"""A size a model cannot take is one line (exit 2) naming a size it can, in benchmark, profile and models."""
from __future__ import annotations

import re

import pytest

from bridgeattn.cli.main import main

SWIN = "bav2_swin_tiny_patch4_window7_224"


@pytest.mark.parametrize("argv, works", [
    (["benchmark", "--models", "plain_resnet20,bav2_resnet50", "--img-size", "8", "--repeats", "1"], 32),
    (["benchmark", "--models", SWIN, "--img-size", "64", "--repeats", "1"], 224),
    (["profile", "bav2_resnet50", "--img-size", "8"], 32),
    (["profile", SWIN, "--img-size", "64"], 224),
    (["models", "bav2_resnet50", "--img-size", "8"], 32),
    (["models", "bav2_resnet20", "--img-size", "2"], 4),
])
def test_a_too_small_size_names_one_that_works(argv, works, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert re.search(rf"it runs on {works} px \(--img-size {works}\)$", lines[0]), lines[0]
    assert "img/s" not in captured.out and "MACs" not in captured.out.replace("params       MACs", "")


def test_the_hint_suggests_no_other_model_to_a_small_input_model(capsys):
    """A small-input model that is given too small an image is told its size, not to use itself."""
    assert main(["models", "bav2_resnet20", "--img-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "bav2_resnet20, or small_input" not in err and "use at least 4 px" in err
    assert main(["profile", "bav2_resnet50", "--img-size", "8"]) == 2
    assert "use at least 32 px, a small-input model such as bav2_resnet20" in capsys.readouterr().err


def test_the_named_size_does_work(capsys):
    assert main(["profile", "bav2_resnet20", "--img-size", "4", "--batch-size", "2"]) == 0
    assert main(["models", "bav2_resnet20", "--img-size", "4"]) == 0
