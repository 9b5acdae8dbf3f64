"""One module per ``bridgeattn`` command: ``add_arguments(parser)`` and ``run(args) -> int``."""

import json
from pathlib import Path
from typing import Any


def write_json_report(path: str | None, report: Any) -> None:
    """Write ``report`` as JSON to ``path`` (parents created) and say so; nothing when ``path`` is empty."""
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
