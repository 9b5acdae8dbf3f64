"""The package as users install and import it: public API, import layering, packaging files, torch.hub."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bridgeattn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser under its PyPI name (the dev extra)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "bridgeattn"


def test_public_api_is_importable_and_registers_the_models() -> None:
    """``import bridgeattn`` exposes every name of ``__all__`` and registers the models with timm."""
    import timm

    for name in bridgeattn.__all__:
        assert getattr(bridgeattn, name) is not None, name
    assert timm.is_model("bav2_resnet50") and "bav2_resnet50" in timm.list_models("bav2_*")


@pytest.mark.slow  # a fresh interpreter
def test_old_import_paths_work_with_a_deprecation_warning() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import bridgeattn.loading\nexcept DeprecationWarning as w: print(w)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "bridgeattn.loading moved to bridgeattn.weights.loading" in out
    from bridgeattn.loading import load_model  # noqa: F401  (still importable)


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
    """The floor in pyproject.toml is the one `make test-floor` installs; coord.py needs timm's coord attention."""
    deps = _project()["project"]["dependencies"]
    assert "timm>=1.0.23,<2" in deps
    assert 'get_attn("coord")' in (SRC / "layers" / "coord.py").read_text()
    assert "TIMM_FLOOR" in (ROOT / "Makefile").read_text()


def test_torch_hub_loads_from_the_checkout() -> None:
    model = torch.hub.load(str(ROOT), "bav2_resnet18", source="local", num_classes=3)
    assert model.pretrained_cfg["architecture"] == "bav2_resnet18" and model.num_classes == 3


def test_onnx_export_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bridgeattn.weights.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    model = bridgeattn.create_model("bav2_resnet20")
    with pytest.raises(bridgeattn.UserError, match=r"pip install 'bridgeattn\[onnx\]'"):
        export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
