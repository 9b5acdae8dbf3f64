"""argparse pieces shared by the commands: checked numbers, switches, devices, weights, the JSON flags (docs/cli.md)."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..config import OPTIONS
from ..errors import UserError
from ..files import write_json
from ..models import create_model
from ..weights.loading import LoadedModel, load_model


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every command's help: a flag's default once, where it says something (switches too; no "(default: None)",
    none when the text names its default)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:  # the hook argparse's formatters override
        text = action.help or ""
        said = "(default" in text or "default:" in text
        if said or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _checked(kind: type, ok: Callable[[Any], bool], need: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` of the text, refused (one line) unless ``ok``; ``need`` says what is."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{need}, got {value}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive_int = _checked(int, lambda v: v >= 1, "must be at least 1")  # sizes, counts, batch sizes
non_negative_int = _checked(int, lambda v: v >= 0, "must not be negative")
positive_float = _checked(float, lambda v: v > 0, "must be positive")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``, checked while parsing, so that a typo is one line, not a traceback."""

    def device(text: str) -> str:
        name, _, index = text.partition(":")
        if text in ("auto", "cpu", "cuda") or (name == "cuda" and index.isdigit()):
            return text
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")

    parser.add_argument("--device", type=device, default="auto", help=OPTIONS["device"].help)  # as train's


def switch(parser: argparse.ArgumentParser, flag: str, help: str, default: bool = False) -> None:
    """An on/off setting: ``--flag`` and ``--no-flag``."""
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)


def add_int_argument(parser: argparse.ArgumentParser, flag: str, help: str, *, default: int | None = None,
                     check: Callable[[str], int] = positive_int) -> None:
    """``flag N``: a size or count, parsed and range-checked by ``check`` (``positive_int`` by default)."""
    parser.add_argument(flag, type=check, default=default, metavar="N", help=help)


def add_weights_arguments(parser: argparse.ArgumentParser, checkpoint: str, required: bool = False) -> None:
    """``--checkpoint`` (``checkpoint``: what it may be), ``--model`` (alone: random weights unless ``required``) and
    ``--unsafe-load``."""
    parser.add_argument("--checkpoint", required=required, metavar="PATH", help=checkpoint)
    alone = "" if required else ", or alone for random weights"
    parser.add_argument("--model", help=f"model name, e.g. bav2_resnet50: for weights that do not name it{alone}")
    switch(parser, "--unsafe-load", "allow checkpoints that need arbitrary code to load (trusted files only)")


def model_from_args(args: argparse.Namespace) -> tuple[nn.Module, LoadedModel | None]:
    """``(model, LoadedModel)`` from ``--checkpoint`` (with ``--model`` for weights that do not name it), or a fresh
    ``--model`` and ``None``; ``--in-chans``/``--num-classes`` where the command has and was given them."""
    if not args.checkpoint and not args.model:
        raise UserError("pass --model NAME (random weights) and/or --checkpoint PATH")
    overrides = {key: getattr(args, key) for key in ("in_chans", "num_classes") if getattr(args, key, None)}
    if args.checkpoint:
        loaded = load_model(args.checkpoint, args.model, unsafe=args.unsafe_load, **overrides)
        return loaded.model, loaded
    return create_model(args.model, **overrides).eval(), None


def add_json_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json PATH`` writes ``what`` as JSON to a file; ``--print-json`` prints it instead of the table."""
    parser.add_argument("--json", metavar="PATH", help=f"also write the {what} as JSON to this file")
    parser.add_argument("--print-json", action="store_true", help=f"print the {what} as JSON instead of a table")


def emit_json(args: argparse.Namespace, data: Any, table: str | None = None) -> None:
    """Print ``table`` (or, under --print-json, ``data`` as JSON instead); write ``data`` to --json PATH if given."""
    if table is not None and not args.print_json:
        print(table)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
        if not args.print_json:
            print(f"wrote {path}")
    if args.print_json:
        print(json.dumps(data, indent=1))
