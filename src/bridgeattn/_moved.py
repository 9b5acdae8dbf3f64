"""The old import paths of modules that moved into the layer folders (kept for one release; see CHANGELOG.md)."""
from __future__ import annotations

import warnings


def moved(old: str, new: str) -> None:
    """Warn once per import that module ``old`` now lives at ``new``."""
    warnings.warn(f"{old} moved to {new}; the old path will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
