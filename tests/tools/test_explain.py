"""``explain``: Grad-CAM figures of a block's taps and the gate statistics of a BA model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bridgeattn
from bridgeattn.tools.explain import block_gradcam, explain, gate_statistics
from bridgeattn.weights.loading import load_model

pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(2):
        pixels = (rng.random((20, 20)) * 255).astype(np.uint8)
        pixels[4:12, 6:14] = 255  # a bright square: something to look at
        files.append(tmp_path / "imgs" / f"img{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(files[-1])
    return files


def _model(name: str = "bav2_resnet20") -> torch.nn.Module:
    return bridgeattn.create_model(name, in_chans=1, num_classes=4).eval()


def test_gradcam_maps_have_the_image_size_and_differ_between_taps() -> None:
    x = torch.randn(2, 1, 16, 16)
    cams, classes = block_gradcam(_model(), x, "layer2.0")
    assert list(cams) == ["input", "conv1", "conv2", "output"]
    assert len(classes) == 2
    for cam in cams.values():
        assert cam.shape == (2, 16, 16) and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    maps = list(cams.values())
    for i in range(len(maps)):
        for j in range(i + 1, len(maps)):
            assert np.abs(maps[i] - maps[j]).mean() > 1e-3, (list(cams)[i], list(cams)[j])
    with pytest.raises(bridgeattn.UserError, match="no block"):
        block_gradcam(_model(), x, "layer9.0")


def test_explain_writes_figures_and_gate_statistics(tmp_path: Path, images: list[Path]) -> None:
    report = explain(_model(), images, tmp_path / "out", "layer2.0", img_size=16, mean=(0.5,), std=(0.25,))
    assert len(report["images"]) == 2
    for entry in report["images"]:
        with Image.open(entry["figure"]) as png:
            assert png.size == (5 * 200, 235)  # image + 4 taps, 200 px panels + title strip
    stats = json.loads((tmp_path / "out" / "gate_stats.json").read_text())
    assert set(stats["stages"]) == {"layer1", "layer2", "layer3"}
    assert len(stats["blocks"]) == 9
    for name in ("selection_weights.png", "gate_distribution.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_gate_statistics_report_the_learned_selection_and_gate_values() -> None:
    model = _model()
    with torch.no_grad():
        model.layer3[1].ba.selection.weight.copy_(torch.tensor([[0.25, -1.5]]))
    x = torch.randn(3, 1, 16, 16)
    stats = gate_statistics(model, x)
    assert stats["blocks"]["layer3.1"]["selection_weights"] == pytest.approx([0.25, -1.5])
    # Gate values recomputed independently from a hook on one gate.
    seen = []
    handle = model.layer1[0].ba.register_forward_hook(lambda m, a, out: seen.append(out.flatten()))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert stats["blocks"]["layer1.0"]["gate_mean"] == pytest.approx(float(seen[0].mean()), abs=1e-6)
    layer1 = stats["stages"]["layer1"]
    assert layer1["count"] == 3 * 3 * 16 and sum(layer1["histogram"]["counts"]) == layer1["count"]
    with pytest.raises(bridgeattn.UserError, match="no bridge"):
        gate_statistics(_model("se_resnet20"), x)


def test_constant_gates_are_called_dead_in_the_statistics_and_the_report(tmp_path: Path, images: list[Path]) -> None:
    model = _model()
    bridges = [m for m in model.modules() if isinstance(m, bridgeattn.BridgeAttention)]
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        for ba in bridges:  # every hidden unit active: each gate varies with the image
            ba.norm.bias.fill_(1.0)
        assert gate_statistics(model, x)["summary"] == "all 9 gates vary over the images (std >= 1e-06)"
        for ba in bridges[:5]:  # no input reaches these gates: sigmoid(0) = 1/2 for every image and channel
            ba.generation.weight.zero_()
    stats = gate_statistics(model, x)
    dead = [block for block, v in stats["blocks"].items() if v["dead"]]
    assert dead == ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1"]
    assert all(stats["blocks"][b]["gate_std"] < 1e-6 and stats["blocks"][b]["gate_mean"] == 0.5 for b in dead)
    assert stats["summary"] == (
        "5 of 9 gates are constant (std < 1e-06): layer1.0 = 0.50, layer1.1 = 0.50, layer1.2 = 0.50, "
        "layer2.0 = 0.50, layer2.1 = 0.50; a constant gate scales its block by a fixed factor and attends to nothing")
    report = explain(model, images[:1], tmp_path / "out", img_size=16, mean=(0.5,), std=(0.25,))
    written = json.loads((tmp_path / "out" / "gate_stats.json").read_text())
    assert report["gate_summary"] == written["summary"] and written["summary"].startswith("5 of 9 gates")


def test_explain_command_loads_a_checkpoint(tmp_path: Path, images: list[Path], capsys) -> None:
    from bridgeattn.cli.main import main

    model = _model()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "config": {"model": "bav2_resnet20"}}, ckpt)
    loaded = load_model(ckpt, "bav2_resnet20")
    assert loaded.name == "bav2_resnet20" and loaded.model.fc.out_features == 4 and loaded.model.in_chans == 1
    out = tmp_path / "cli"
    argv = ["explain", "--checkpoint", str(ckpt), "--images", str(images[0].parent), "--block", "layer1.1",
            "--output", str(out), "--img-size", "16", "--mean", "0.5", "--std", "0.25"]
    assert main(argv) == 0
    assert len(list((out / "gradcam").glob("*.png"))) == 2 and (out / "gate_stats.json").is_file()
    summary = json.loads((out / "gate_stats.json").read_text())["summary"]
    assert f"gates: {summary}\n" in capsys.readouterr().out and " 9 gates " in summary
    assert main(["explain", "--images", str(images[0])]) == 2  # neither --checkpoint nor --model
