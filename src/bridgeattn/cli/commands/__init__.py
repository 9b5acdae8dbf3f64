"""One module per ``bridgeattn`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""

from pathlib import Path
from typing import Any


def write_json_report(path: str | None, report: Any) -> None:
    """Write ``report`` as JSON to ``path`` (parents created) and say so; nothing when ``path`` is empty."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from ...files import write_json

    write_json(out, report)
    print(f"wrote {out}")
