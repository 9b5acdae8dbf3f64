"""The package as users install and import it: public API, import layering, packaging files, torch.hub."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bridgeattn

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bridgeattn"


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` of the root's ``if TYPE_CHECKING:`` block (what IDEs and type checkers read)."""
    tree = ast.parse((SRC / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {a.name: f"bridgeattn.{n.module}" for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names}


@pytest.mark.slow  # four fresh interpreters
def test_any_module_can_be_imported_first() -> None:
    """Registration waits for the core modules when one of them is what first imports timm."""
    for first in ("bridgeattn.bridge", "bridgeattn.attention.srm", "bridgeattn.fusion", "bridgeattn.ops"):
        code = f"import {first}, timm; assert timm.is_model('bav2_resnet50')"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_public_api_is_visible_to_type_checkers_and_loads() -> None:
    declared = _type_checking_imports()
    assert declared == bridgeattn._LAZY
    assert set(bridgeattn.__all__) == {"UserError", "__version__", *declared}
    for name, module in declared.items():
        assert getattr(bridgeattn, name) is getattr(sys.modules[module], name)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules that importing ``path`` imports: its module-level imports (not those deferred into
    functions, nor ``if TYPE_CHECKING:`` blocks)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    deferred = (ast.FunctionDef, ast.AsyncFunctionDef)
    skip = {id(n) for b in ast.walk(tree) if isinstance(b, deferred) or
            (isinstance(b, ast.If) and getattr(b.test, "id", "") == "TYPE_CHECKING") for n in ast.walk(b)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
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
    return {m for m in found if m in modules and m != name}


def test_package_imports_have_no_cycle() -> None:
    paths = list(SRC.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports(p, modules) for p in paths}
    # Depth-first search for a back edge; report one cycle.
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
        if start not in state:
            cycle = visit(start)
            assert cycle is None, " -> ".join(cycle)
    assert graph["bridgeattn.models.resnet"] >= {"bridgeattn.bridge", "bridgeattn.ops"}  # the walk sees imports


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_extras_install_what_they_say() -> None:
    extras = _project()["project"]["optional-dependencies"]

    def resolve(name: str) -> set[str]:
        out: set[str] = set()
        for req in extras[name]:
            if req.startswith("bridgeattn["):
                for sub in req[len("bridgeattn["):-1].split(","):
                    out |= resolve(sub)
            else:
                out.add(req.split(">")[0].split("=")[0].split("<")[0])
        return out

    assert not resolve("all") & {"pytest", "hypothesis", "ruff"}
    assert {"pytest", "hypothesis", "ruff"} <= resolve("dev")
    assert {"onnx", "onnxruntime", "grad-cam"} <= resolve("all")


def test_license_and_typing_marker_ship() -> None:
    project = _project()
    assert project["project"]["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    assert (SRC / "py.typed").exists() and "py.typed" in project["tool"]["setuptools"]["package-data"]["bridgeattn"]
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()


def test_timm_floor_is_the_first_with_coordinate_attention() -> None:
    """The floor in pyproject.toml is the one `make test-floor` installs; coord.py needs timm.layers.coord_attn."""
    deps = _project()["project"]["dependencies"]
    assert "timm>=1.0.23,<2" in deps
    assert "timm.layers.coord_attn" in (SRC / "attention" / "coord.py").read_text()
    assert "TIMM_FLOOR" in (ROOT / "Makefile").read_text()


def test_torch_hub_loads_from_the_checkout() -> None:
    model = torch.hub.load(str(ROOT), "bav2_resnet18", source="local", num_classes=3)
    assert model.pretrained_cfg["architecture"] == "bav2_resnet18" and model.num_classes == 3


def test_onnx_export_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bridgeattn.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    model = bridgeattn.create_model("bav2_resnet20")
    with pytest.raises(bridgeattn.UserError, match=r"pip install 'bridgeattn\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
