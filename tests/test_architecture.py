"""The package's layering, as docs/architecture.md draws it: every import points down, and no module cycle.

The scan sees what Python would run: imports at module level, inside functions and under ``TYPE_CHECKING``, and
``importlib.import_module("bridgeattn....")`` strings. A second scan finds private APIs (``._modules``,
``sys.modules[``, underscore-prefixed torch and timm modules and names) used without a ``# private:`` reason on the
line. Each rule is shown to fail on a violation planted in a temporary copy of the package.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bridgeattn"

# Lowest first; a module may import only from its own rank or below. Top-level modules other than the package
# root are the foundation (errors, files, the config tree).
LAYERS = ("", "layers", "models", "data", "weights", "engine", "tools", "cli")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path, modules: set[str]) -> set[str]:
    """Package modules that ``path`` imports anywhere in its body, deferred and ``importlib`` ones included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule, else pkg itself
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            target = node.args[0].value
            if target.startswith("."):
                target = package + target if target.count(".") == 1 else target
            found.add(target)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = list(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    return {module_name(p, root): imports_of(p, root, modules) for p in paths}


def is_redirect(root: Path, module: str) -> bool:
    """An old import path kept for one release: it re-exports a module that moved, and may point anywhere."""
    rel = Path(*module.split(".")[1:])
    path = root / (str(rel) + ".py") if (root / (str(rel) + ".py")).exists() else root / rel / "__init__.py"
    return "moved(__name__" in path.read_text()


def rank(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return len(LAYERS)  # the package root: the public API, above everything
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else 0


def upward_imports(root: Path) -> list[str]:
    graph = import_graph(root)
    return sorted(f"{a} -> {b}" for a, deps in graph.items() if not is_redirect(root, a) and a != "bridgeattn.__main__"
                  for b in deps if rank(b) > rank(a))


def find_cycle(root: Path) -> list[str] | None:
    graph = import_graph(root)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_import_points_down_the_layers() -> None:
    assert upward_imports(SRC) == []


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(SRC)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_scan_sees_the_imports_it_must() -> None:
    graph = import_graph(SRC)
    assert graph["bridgeattn.models.resnet"] >= {"bridgeattn.layers.bridge", "bridgeattn.layers.ops"}


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    root = tmp_path / "bridgeattn"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


def test_a_planted_deferred_upward_import_is_found(package_copy: Path) -> None:
    _plant(package_copy / "layers" / "ops.py", "def _planted():\n    from ..tools import compare  # noqa")
    planted = "bridgeattn.layers.ops -> bridgeattn.tools.compare"
    assert planted not in upward_imports(SRC) and planted in upward_imports(package_copy)


def test_a_planted_importlib_string_is_found(package_copy: Path) -> None:
    _plant(package_copy / "models" / "registry.py",
           "def _planted():\n    import importlib\n    return importlib.import_module('bridgeattn.engine.train')")
    planted = "bridgeattn.models.registry -> bridgeattn.engine.train"
    assert planted not in upward_imports(SRC) and planted in upward_imports(package_copy)


def test_a_planted_cycle_is_found(package_copy: Path) -> None:
    _plant(package_copy / "files.py", "def _planted():\n    from . import errors  # noqa")
    _plant(package_copy / "errors.py", "def _planted():\n    from .files import atomic_write  # noqa")
    graph = import_graph(package_copy)
    for name in graph:  # only the planted pair can close a cycle: cut every other module out of the copy
        if name not in ("bridgeattn.files", "bridgeattn.errors"):
            path = package_copy / Path(*name.split(".")[1:])
            for file in (path.with_suffix(".py"), path / "__init__.py"):
                if file.exists() and "__init__" not in file.name:
                    file.unlink()
    cycle = find_cycle(package_copy)
    assert cycle is not None and {"bridgeattn.files", "bridgeattn.errors"} <= set(cycle)


def _is_private(dotted: str) -> bool:
    """``torch._dynamo``, ``timm.models._efficientnet_blocks``, ``torch.cpu._x``: a torch/timm path with an
    underscore-prefixed part (dunders such as ``torch.__version__`` are public)."""
    root, *parts = dotted.split(".")
    return root in ("torch", "timm") and any(p.startswith("_") and not p.startswith("__") for p in parts)


def _dotted(node: ast.AST) -> str:
    return f"{_dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def private_uses(root: Path) -> list[str]:
    """``path:line`` of every private API use in the package whose line gives no ``# private:`` reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        hits = {i for i, line in enumerate(lines, 1) if "._modules" in line or "sys.modules[" in line}
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Call) and _dotted(node.func).endswith("import_module") and node.args:
                names = [getattr(node.args[0], "value", "")]
            elif isinstance(node, ast.Attribute):
                names = [_dotted(node)]
            else:
                continue
            if any(isinstance(n, str) and _is_private(n) for n in names):
                hits.add(node.lineno)
        found += [f"{path.relative_to(root)}:{i}" for i in sorted(hits) if "# private:" not in lines[i - 1]]
    return found


def test_no_private_api_without_a_reason() -> None:
    assert private_uses(SRC) == []


@pytest.mark.parametrize("code", [
    "import torch._dynamo",
    "from timm.models._efficientnet_blocks import InvertedResidual",
    "from torch.cpu import _is_avx512_bf16_supported",
    "def _planted(m):\n    return torch.cpu._is_avx512_bf16_supported()",
    "def _planted(m):\n    import importlib\n    return importlib.import_module('torch._dynamo')",
    "def _planted(m):\n    return list(m._modules)",
    "def _planted():\n    import sys\n    return sys.modules['timm']",
])
def test_a_planted_private_api_is_found(package_copy: Path, code: str) -> None:
    _plant(package_copy / "layers" / "ops.py", code)
    assert [p for p in private_uses(package_copy) if p.startswith("layers/ops.py")]
    _plant(package_copy / "layers" / "ops.py", "import torch._dynamo  # private: the reason")
    assert len(private_uses(package_copy)) == 1  # a reason on the line lets it pass
