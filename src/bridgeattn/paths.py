"""Where the project keeps files on this machine, for every part that caches something."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (decoded data sets, downloads): ``$BRIDGEATTN_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/bridgeattn``, else ``~/.cache/bridgeattn``."""
    if os.environ.get("BRIDGEATTN_CACHE_DIR"):
        return Path(os.environ["BRIDGEATTN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bridgeattn"
