"""Fixtures of the command-line tests."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from bridgeattn.cli.main import main


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture) -> Callable[[list[str]], tuple[int, str]]:
    """``bridgeattn ARGV`` in this process: (exit status, stderr). argparse errors exit through SystemExit."""

    def run(argv: list[str]) -> tuple[int, str]:
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        return status, capsys.readouterr().err

    return run
