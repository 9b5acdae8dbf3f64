"""Deployment exports: ONNX parity with onnxruntime (plain and fused gates), TorchScript, the export command."""
from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch

import bridgeattn
from bridgeattn.cli.main import main
from bridgeattn.layers.bridge import BridgeAttention, FusedBridgeAttention
from bridgeattn.weights import export
from bridgeattn.weights.export import export_model, resolve_input_size, save_safetensors, verify_onnx


def _model(name: str, **kwargs) -> torch.nn.Module:
    """A model with non-trivial BatchNorm statistics (so fusing them is actually exercised)."""
    model = bridgeattn.create_model(name, **kwargs)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif key.endswith("running_mean"):
                t.normal_(0, 0.2)
    return model.eval()


def _fuse(model: torch.nn.Module) -> torch.nn.Module:
    """A fused copy of ``model``."""
    return bridgeattn.fuse(copy.deepcopy(model).eval())


def _batch_dim(path) -> str:
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_param


@pytest.mark.onnx
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
def test_onnx_matches_pytorch_with_a_dynamic_batch(tmp_path, fused: bool) -> None:
    model = _model("bav2_resnet20")
    exported = _fuse(model) if fused else model
    if fused:
        assert any(isinstance(m, FusedBridgeAttention) for m in exported.modules())
        assert not any(isinstance(m, BridgeAttention) for m in exported.modules())
    size = resolve_input_size(model)
    summary = export_model(exported, "onnx", tmp_path / "m.onnx", size, reference=model)
    assert summary["opset"] >= 17 and summary["ok"], summary
    assert summary["max_abs_diff"] < 1e-4
    assert _batch_dim(tmp_path / "m.onnx")  # symbolic, not a fixed number
    # Batch sizes other than the traced one, against the unfused PyTorch model.
    assert verify_onnx(model, tmp_path / "m.onnx", size, batch_sizes=(5,)) < 1e-4


@pytest.mark.onnx
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_onnx_opset17_and_torchscript_bav1(tmp_path) -> None:
    model = _model("bav1_resnet20", in_chans=1, num_classes=4)
    size = resolve_input_size(model, img_size=28)
    assert size == (1, 28, 28)
    summary = export_model(model, "onnx", tmp_path / "m17.onnx", size, opset=17)
    assert summary["opset"] == 17 and summary["exporter"] == "legacy" and summary["ok"], summary
    assert _batch_dim(tmp_path / "m17.onnx")
    summary = export_model(_fuse(model), "torchscript", tmp_path / "m.pt", size, reference=model)
    assert summary["ok"] and summary["max_abs_diff"] < 1e-4, summary
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(3, *size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.onnx
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_command_uses_the_checkpoint(tmp_path, capsys) -> None:
    model = _model("bav2_resnet20", num_classes=3, in_chans=1)
    bridgeattn.save_pretrained(model, tmp_path / "folder")
    weights = tmp_path / "w.safetensors"
    assert main(["export", "--model", "bav2_resnet20", "--checkpoint", str(tmp_path / "folder"),
                 "--format", "safetensors", "--output", str(weights)]) == 0
    capsys.readouterr()
    # num_classes and in_chans come from the checkpoint's tensors.
    out = tmp_path / "m.pt"
    assert main(["export", "--model", "bav2_resnet20", "--checkpoint", str(weights), "--format", "torchscript",
                 "--output", str(out), "--img-size", "24", "--print-json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["input_size"] == [1, 24, 24]
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        # TorchScript's executor may fuse and reorder float ops (it did under AVX2): equal up to rounding
        torch.testing.assert_close(torch.jit.load(str(out))(x), model(x), rtol=1e-5, atol=1e-6)

    assert main(["export", "--model", "bav2_resnet56", "--checkpoint", str(weights), "--format", "onnx",
                 "--output", str(tmp_path / "x.onnx")]) == 2
    assert "holds a bav2_resnet20 model, not bav2_resnet56" in capsys.readouterr().err
    assert main(["export", "--model", "bav2_resnet20", "--format", "hub", "--fuse",
                 "--output", str(tmp_path / "h")]) == 2


def test_export_refuses_its_input_and_an_existing_output_unless_overwrite(tmp_path, capsys) -> None:
    weights = save_safetensors(_model("bav2_resnet20"), tmp_path / "w.safetensors")
    before = weights.read_bytes()
    common = ["export", "--checkpoint", str(weights), "--no-verify"]
    for fmt, output in (("torchscript", weights), ("safetensors", weights), ("hub", tmp_path)):
        for extra in ([], ["--overwrite"]):  # the input itself: never
            assert main([*common, "--format", fmt, "--output", str(output), *extra]) == 2
            assert "would overwrite the weights being exported" in capsys.readouterr().err
    assert weights.read_bytes() == before
    hub = tmp_path / "hub"
    assert main([*common, "--format", "hub", "--output", str(hub)]) == 0
    card = (hub / "README.md").read_text()
    (hub / "README.md").write_text("my notes")
    assert main([*common, "--format", "hub", "--output", str(hub)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (hub / "README.md").read_text() == "my notes"
    assert main([*common, "--format", "hub", "--output", str(hub), "--overwrite"]) == 0
    assert (hub / "README.md").read_text() == card


def test_a_full_disk_is_one_line_and_leaves_no_file_or_folder(tmp_path, capsys, monkeypatch) -> None:
    import errno
    import pathlib

    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    weights = save_safetensors(_model("bav2_resnet20"), tmp_path / "w.safetensors")
    monkeypatch.setattr(safetensors.torch, "save_file", full)  # the safetensors writer (also the hub folder's)
    monkeypatch.setattr(pathlib.Path, "write_bytes", full)  # the TorchScript bytes
    monkeypatch.setattr(export, "_write_onnx", full)  # the ONNX exporter's file
    out = tmp_path / "out"
    out.mkdir()
    for fmt, name in (("safetensors", "m.safetensors"), ("hub", "hub"), ("torchscript", "m.pt"), ("onnx", "m.onnx")):
        code = main(["export", "--checkpoint", str(weights), "--format", fmt, "--output", str(out / name)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "No space left on device" in err, (fmt, err)
        assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out", "w.safetensors"]
