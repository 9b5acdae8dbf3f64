"""argparse pieces shared by every command (no torch): ranges, comma lists, the JSON flags. See docs/cli.md."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def positive_int(text: str) -> int:
    """An int >= 1 (sizes, counts, batch sizes)."""
    value = _number(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(int, text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(float, text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked here, so that a typo is one line, not a traceback)."""
    name, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (name == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def _number(kind: type, text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


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
