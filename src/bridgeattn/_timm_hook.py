"""Register the models with timm when timm is imported, so that ``import bridgeattn`` itself stays light.

``import bridgeattn`` followed by ``timm.create_model("bav2_resnet50")`` must work, yet the command line must answer
``--help`` without importing torch. So ``import bridgeattn`` registers the models at once when timm is already
imported, and otherwise right after timm's own import finishes (an import hook that removes itself).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

# The modules the model registry imports that themselves import timm. While one of them is part-way through
# its own import (it is what imported timm), registering would import it again half-done: the registration
# waits, and the last of them to finish runs it (``register_pending`` at the end of each).
_CORE = ("bridgeattn.bridge", "bridgeattn.attention")
_pending = False


def _importing(exclude: str = "") -> bool:
    """Whether a core module other than ``exclude`` is part-way through its import."""
    for name, module in list(sys.modules.items()):
        if name != exclude and name.startswith(_CORE) and getattr(module.__spec__, "_initializing", False):
            return True
    return False


def register_models() -> None:
    global _pending
    if _importing():
        _pending = True
        return
    _pending = False
    importlib.import_module("bridgeattn.models")


def register_pending(caller: str) -> None:
    """Called last by each core module: runs a registration that had to wait for the core to finish."""
    global _pending
    if _pending and not _importing(exclude=caller):
        _pending = False
        importlib.import_module("bridgeattn.models")


class _AfterTimmFinder(importlib.abc.MetaPathFinder):
    """Finds ``timm`` like the other finders do, with a loader that registers our models after timm loads."""

    def find_spec(self, name, path, target=None):  # type: ignore[override]
        if name != "timm":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)  # the other finders, as if this one were not there
        if spec is not None and spec.loader is not None:
            spec.loader = _AfterTimmLoader(spec.loader)
        return spec


class _AfterTimmLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):  # type: ignore[override]
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # timm sees its own loader, as without the hook
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        register_models()


_FINDER = _AfterTimmFinder()


def install() -> None:
    """Register the models now if timm is imported, else when it is."""
    if "timm" in sys.modules:
        register_models()
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
