"""argparse pieces shared by every command (no torch): ranges, comma lists, the JSON flags. See docs/cli.md."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


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

DEVICE_HELP = "auto | cpu | cuda[:N]; auto: cuda if available, else cpu"


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked here, so that a typo is one line, not a traceback)."""
    name, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (name == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def add_json_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json PATH`` writes ``what`` as JSON to a file; ``--print-json`` prints it instead of the table."""
    parser.add_argument("--json", metavar="PATH", help=f"also write the {what} as JSON to this file")
    parser.add_argument("--print-json", action="store_true", help=f"print the {what} as JSON instead of a table")


def emit_json(args: argparse.Namespace, data: Any) -> bool:
    """Write/print ``data`` as the JSON flags ask; True when it was printed (the caller then prints no table)."""
    printed = bool(getattr(args, "print_json", False))
    if getattr(args, "json", None):
        from ..files import write_json

        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, data)
        if not printed:
            print(f"wrote {path}")
    if printed:
        print(json.dumps(data, indent=1))
    return printed
