"""torch.hub entry points: ``torch.hub.load(repo_or_dir, "bav2_resnet50", source="local"|"github")``.

Every model of ``bridgeattn.list_models(include_timm=False)`` is an entry point taking timm's
``create_model`` arguments (``num_classes``, ``in_chans``, ``pretrained``, gate settings, ...).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

dependencies = ["torch", "timm"]

# A checkout (torch.hub's download, or a local clone) has the package under src/, not installed.
_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import bridgeattn  # noqa: E402


def _entry(name: str):
    def entry(pretrained: bool = False, **kwargs: Any):
        return bridgeattn.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"``bridgeattn.create_model({name!r}, ...)``"
    return entry


for _name in bridgeattn.list_models(include_timm=False):
    globals()[_name] = _entry(_name)
