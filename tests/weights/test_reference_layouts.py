"""Reference checkpoint import: the three layouts of docs/spec.md, section 5, strict loads, sections 2-3 math."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

import bridgeattn
from bridgeattn.cli.main import main
from bridgeattn.models.resnet import create_resnet_variant
from bridgeattn.weights.convert import convert_official_state_dict, detect_layout, load_state_dict_strict

LAYOUTS = ("bav2", "bav1", "bav1-fusions")


def _model(layout: str, kind: str) -> torch.nn.Module:
    """A small random model of ours: BasicBlock (resnet20) or a narrow one-block-per-stage Bottleneck net."""
    attention = "bav2" if layout == "bav2" else "bav1"
    if kind == "basic":
        model = bridgeattn.create_model(f"{attention}_resnet20", num_classes=10)
    else:
        model = create_resnet_variant(
            f"{attention}_resnet50", False, layers=(1, 1, 1, 1), block_kind="bottleneck", attention=attention,
            model_args=dict(channels=(16, 32, 64, 128), num_classes=10),
        )
    # Non-trivial statistics everywhere, so a mis-assigned BatchNorm tensor changes the outputs.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")) or (name.endswith("weight") and t.dim() == 1):
                t.copy_(torch.randn(t.shape, generator=g) * 0.2 + (1.0 if name.endswith("weight") else 0.0))
    return model.eval()


def _to_reference(state_dict: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """Rename our keys to a reference layout (the inverse of the converter, written independently)."""
    taps: dict[str, int] = {}
    for key in state_dict:
        if m := re.match(r"(.+\.ba)\.integration\.(\d+)\.weight$", key):
            taps[m.group(1)] = max(taps.get(m.group(1), 0), int(m.group(2)) + 1)
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"(.+\.ba)\.(.+)$", key)
        if m is None:
            out[key] = value.clone()
            continue
        block, rest = m.groups()
        last = taps[block] - 1
        if layout == "bav2":
            rest = re.sub(r"^integration\.(\d+)\.weight$", r"fusions.\1.0.weight", rest)
            rest = re.sub(r"^selection\.", "proj.", rest)
            rest = re.sub(r"^norm\.", "generation.0.", rest)
            rest = re.sub(r"^generation\.weight$", "generation.2.weight", rest)
        else:
            if layout == "bav1":
                rest = re.sub(rf"^integration\.{last}\.", "cur_fusion.0.", rest)
                rest = re.sub(rf"^integration_norm\.{last}\.", "cur_fusion.1.", rest)
                rest = re.sub(r"^integration\.(\d+)\.", r"pre_fusions.\1.0.", rest)
                rest = re.sub(r"^integration_norm\.(\d+)\.", r"pre_fusions.\1.1.", rest)
            else:
                rest = re.sub(r"^integration\.(\d+)\.", r"fusions.\1.0.", rest)
                rest = re.sub(r"^integration_norm\.(\d+)\.", r"fusions.\1.1.", rest)
            rest = re.sub(r"^generation\.weight$", "generation.1.weight", rest)
        assert not rest.startswith(("integration", "selection", "norm")), rest
        out[f"{block}.{rest}"] = value.clone()
    return out


def _checkpoint(ref: dict[str, torch.Tensor], layout: str) -> dict:
    """The container each reference training script saves."""
    if layout == "bav2":
        return {"model": ref, "optimizer": {}, "lr_scheduler": {}, "epoch": 299}
    if layout == "bav1":
        return {"state_dict": {f"module.{k}": v for k, v in ref.items()}, "epoch": 100, "arch": "resnet",
                "best_prec1": 78.85, "optimizer": {}}
    return ref


def _bn(x: torch.Tensor, ref: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, ref[f"{p}.running_mean"], ref[f"{p}.running_var"], ref[f"{p}.weight"], ref[f"{p}.bias"],
                        False, 0.0, 1e-5)


def _reference_gate(ref: dict[str, torch.Tensor], p: str, s: list[torch.Tensor], layout: str) -> torch.Tensor:
    """docs/spec.md, sections 2 and 3 on the reference tensors: the gate ``(B, C)``."""
    n = len(s)
    if layout == "bav2":
        z = [si @ ref[f"{p}.fusions.{i}.0.weight"].t() for i, si in enumerate(s)]
        a, b = ref[f"{p}.proj.weight"][0], ref[f"{p}.proj.bias"][0]
        u = sum(a[i] * z[i] for i in range(n)) + b
        return torch.sigmoid(torch.relu(_bn(u, ref, f"{p}.generation.0")) @ ref[f"{p}.generation.2.weight"].t())
    if layout == "bav1":
        names = [f"{p}.pre_fusions.{i}" for i in range(n - 1)] + [f"{p}.cur_fusion"]
    else:
        names = [f"{p}.fusions.{i}" for i in range(n)]
    u = sum(_bn(si @ ref[f"{q}.0.weight"].t(), ref, f"{q}.1") for q, si in zip(names, s))
    return torch.sigmoid(torch.relu(u) @ ref[f"{p}.generation.1.weight"].t())


def _reference_block(ref: dict[str, torch.Tensor], p: str, x: torch.Tensor, kind: str, layout: str, stride: int):
    """One reference residual block, written functionally from docs/spec.md, section 2."""
    shortcut = _bn(F.conv2d(x, ref[f"{p}.downsample.0.weight"], stride=stride), ref, f"{p}.downsample.1")
    if kind == "basic":
        y1 = torch.relu(_bn(F.conv2d(x, ref[f"{p}.conv1.weight"], stride=stride, padding=1), ref, f"{p}.bn1"))
        y_last = _bn(F.conv2d(y1, ref[f"{p}.conv2.weight"], padding=1), ref, f"{p}.bn2")
        taps = [y1, y_last]
    else:
        y1 = torch.relu(_bn(F.conv2d(x, ref[f"{p}.conv1.weight"]), ref, f"{p}.bn1"))
        y2 = torch.relu(_bn(F.conv2d(y1, ref[f"{p}.conv2.weight"], stride=stride, padding=1), ref, f"{p}.bn2"))
        y_last = _bn(F.conv2d(y2, ref[f"{p}.conv3.weight"]), ref, f"{p}.bn3")
        taps = [y1, y2, y_last]
    w = _reference_gate(ref, f"{p}.ba", [t.mean((2, 3)) for t in taps], layout)
    return torch.relu(y_last * w[:, :, None, None] + shortcut)


@pytest.mark.parametrize("kind", ["basic", "bottleneck"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_layouts_convert_load_strictly_and_match_the_spec_math(layout: str, kind: str) -> None:
    source = _model(layout, kind)
    ref = _to_reference(source.state_dict(), layout)
    assert detect_layout(ref) == layout
    assert not any(".ba.integration" in k for k in ref)

    converted = convert_official_state_dict(_checkpoint(ref, layout), layout.split("-")[0])
    fresh = _model(layout, kind)
    torch.manual_seed(123)  # a different draw, so equal outputs come from the loaded weights
    for p in fresh.parameters():
        torch.nn.init.normal_(p)
    load_state_dict_strict(fresh, converted)
    fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), source(x))

        # The reference math on the reference tensors, independent of our modules.
        block_in = torch.randn(2, fresh.layer2[0].conv1.in_channels, 8, 8)
        expected = _reference_block(ref, "layer2.0", block_in, kind, layout, stride=2)
        got = fresh.layer2[0](block_in)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_wrong_version_and_wrong_model_are_user_errors() -> None:
    source = _model("bav1", "basic")
    ckpt = _checkpoint(_to_reference(source.state_dict(), "bav1"), "bav1")
    with pytest.raises(bridgeattn.UserError, match="BAv1 layout.*--from bav1"):
        convert_official_state_dict(ckpt, "bav2")
    converted = convert_official_state_dict(ckpt, "auto")
    deeper = bridgeattn.create_model("bav1_resnet56", num_classes=10)
    with pytest.raises(bridgeattn.UserError, match=r"missing in the checkpoint: layer1\.3\."):
        load_state_dict_strict(deeper, converted)
    with pytest.raises(bridgeattn.UserError, match=r"integration_norm"):
        load_state_dict_strict(bridgeattn.create_model("bav2_resnet20", num_classes=10), converted)
    with pytest.raises(bridgeattn.UserError, match="no bridge-attention keys"):
        convert_official_state_dict({"model": {"fc.weight": torch.zeros(2, 2)}}, "bav2")


def test_convert_command_writes_safetensors_that_load_strictly(tmp_path, capsys) -> None:
    source = _model("bav1", "basic")
    src = tmp_path / "model_best.pth.tar"
    torch.save(_checkpoint(_to_reference(source.state_dict(), "bav1"), "bav1"), src)
    out = tmp_path / "bav1_resnet20.safetensors"
    assert main(["convert", str(src), str(out), "--model", "bav1_resnet20", "--from", "bav1"]) == 0
    assert "bav1 layout" in capsys.readouterr().out

    loaded = bridgeattn.create_model("bav1_resnet20", num_classes=10)
    load_state_dict_strict(loaded, bridgeattn.load_file(out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), source(x))

    assert main(["convert", str(src), str(out), "--model", "bav1_resnet56"]) == 2
    assert "missing in the checkpoint" in capsys.readouterr().err


def test_convert_refuses_an_unknown_version_whatever_the_layout(tmp_path) -> None:
    from bridgeattn.weights.export import convert_checkpoint

    ours = tmp_path / "ours.pth"  # this package's own layout: nothing to rename, the version is still checked
    torch.save(bridgeattn.create_model("bav1_resnet20", num_classes=10).state_dict(), ours)
    with pytest.raises(bridgeattn.UserError, match="version must be 'bav1', 'bav2' or 'auto', got 'bogus'"):
        convert_checkpoint(ours, tmp_path / "out.safetensors", "bav1_resnet20", version="bogus")
    assert not (tmp_path / "out.safetensors").exists()
