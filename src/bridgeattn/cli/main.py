"""``bridgeattn <command>``: a thin shell over the library's functions. Each command is a module of
``cli/commands`` (``add_arguments``, ``run``), imported only when it runs, so ``bridgeattn --help`` stays fast."""
from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from ..errors import UserError
from ..files import check_writable
from .arguments import HelpFormatter

# command -> one-line help
COMMANDS: dict[str, str] = {
    "models": "list the registered models with params and MACs",
    "train": "train a model (single process, or DDP with --nproc / torchrun)",
    "eval": "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix",
    "demo": "the main job: BAv2 vs the plain baseline on Fashion-MNIST, side by side",
    "compare": "train attention variants under one budget over several seeds and compare them",
    "explain": "Grad-CAM of a block's taps and the gate statistics of a trained BA model",
    "benchmark": "interleaved throughput benchmark of several models (img/s medians, ratios)",
    "profile": "params, MACs, per-stage breakdown and activation memory of one model",
    "export": "export a model to ONNX, TorchScript, safetensors or a hub-style folder",
    "convert": "convert a reference BA-Net checkpoint to safetensors for our models",
    "shard": "write a data set as webdataset tar shards for streaming (--data wds:DIR)",
}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (and the usual exit status 2) from the command they belong to, pointing to its
    --help, with the closest names; no abbreviations (``--epoch`` is a typo, not ``--epochs``); one help format."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, "formatter_class": HelpFormatter, **kwargs})
        self.commands: dict[str, argparse.ArgumentParser] = {}  # name -> its parser (build_parser sets it)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:  # argparse reports a command's unknown flags from the top: report them from the command
            command = self.commands.get(getattr(parsed, "command", None), self)
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)} (see '{self.prog} --help')\n")

    def _suggestion(self, message: str) -> str:
        words: list[str] = []
        known: list[str] = []
        if message.startswith("unrecognized arguments:"):
            words = [w.split("=")[0] for w in message.split(":", 1)[1].split() if w.startswith("--")]
            known = [s for a in self._actions for s in a.option_strings]
        elif match := re.search(r"invalid choice: '([^']*)'", message):
            words = [match.group(1)]
            known = [c for a in self._actions for c in (a.choices or []) if isinstance(c, str)]
        # a flag the word shortens or extends at a dash (--epoch: --epochs, --lr-rate: --lr), else the closest one
        close = sorted({c for w in words for c in ([k for k in known if k.startswith(w) or w.startswith(k + "-")]
                                                   or difflib.get_close_matches(w, known, n=1, cutoff=0.7))})
        return f"; did you mean {', '.join(close)}?" if close else ""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the ``only`` subcommand's arguments are loaded (none for ``bridgeattn --help``)."""
    parser = _Parser(prog="bridgeattn",
                     description="Bridge Attention (BA-Net) models: train, compare, explain, benchmark and export.")
    try:
        release = version("bridgeattn")
    except PackageNotFoundError:  # a source tree that was never installed
        release = "0+unknown"
    parser.add_argument("--version", action="version", version=f"bridgeattn {release}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = sub.choices
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == only:  # the other commands' modules stay unimported: help and parsing stay fast
            module = importlib.import_module(f"bridgeattn.cli.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


class _StdoutHandler(logging.Handler):
    """The library's log lines, bare, on the current ``sys.stdout`` (on stderr under ``--print-json``), through
    ``tqdm.write`` so that a progress bar on the screen is redrawn below the line, not cut by it."""

    to_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            stream = sys.stderr if self.to_stderr else sys.stdout
            tqdm.write(self.format(record), file=stream)
            stream.flush()
        except Exception:
            self.handleError(record)


def _show_library_log(to_stderr: bool) -> None:
    """The command line shows the library's INFO lines (progress, resume notes); the library itself only logs."""
    logger = logging.getLogger("bridgeattn")
    handler = next((h for h in logger.handlers if isinstance(h, _StdoutHandler)), None)
    if handler is None:
        handler = _StdoutHandler()
        logger.addHandler(handler)
    handler.to_stderr = to_stderr
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    _show_library_log(to_stderr=bool(getattr(args, "print_json", False)))
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if getattr(args, "json", None):  # before any work, so a measured report is never lost at the end
            check_writable(args.json, flag="--json")
        return int(args._run(args) or 0)
    except (UserError, FileNotFoundError) as exc:
        print(f"bridgeattn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped early (bridgeattn models | head): end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the exit's flush of stdout raises nothing either
        return 0
    except OSError as exc:
        if not exc.filename:  # not about a path the user gave: a real failure, with its traceback below
            return _traceback()
        print(f"bridgeattn {args.command}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bridgeattn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _traceback()


def _traceback() -> int:
    """An unexpected failure: its traceback (re-raised under BRIDGEATTN_DEBUG=1) and exit status 1."""
    if os.environ.get("BRIDGEATTN_DEBUG"):
        raise
    traceback.print_exc()
    return 1


if __name__ == "__main__":
    sys.exit(main())
