"""A run's preprocessing travels with its exports: timm's standard transform on the hub folder and onnxruntime on
the ONNX file, each fed the run's own images, score what ``bridgeattn eval`` scores."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
from PIL import Image

from bridgeattn.cli.main import main
from bridgeattn.config import from_flat
from bridgeattn.data.fashion_mnist import SYSTEM_DIR
from bridgeattn.engine import train

VAL = 500

pytestmark = pytest.mark.skipif(
    not SYSTEM_DIR.is_dir() and not os.environ.get("BRIDGEATTN_CACHE_DIR"),
    reason="Fashion-MNIST is not on this machine (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("roundtrip") / "run"
    train(*from_flat(dict(model="bav2_resnet20", data="fashion-mnist", train_subset=2048, val_subset=VAL, epochs=1,
                      batch_size=64, lr=3e-3, workers=0, progress=False, plots=False, download=False,
                      output=str(folder))))
    return folder


def _val_images() -> tuple[list[Image.Image], np.ndarray]:
    """The first VAL test images as the PIL images a user would have, and their labels."""
    from bridgeattn.data.fashion_mnist import load_fashion_mnist

    _, (images, labels), _ = load_fashion_mnist(download=False)
    return [Image.fromarray(img[0].numpy(), mode="L") for img in images[:VAL]], labels[:VAL].numpy()


@pytest.mark.onnx
def test_hub_and_onnx_exports_score_what_eval_scores(run: Path, tmp_path: Path, capsys) -> None:
    import onnxruntime as ort

    assert main(["eval", "--checkpoint", str(run), "--output", str(tmp_path / "eval"), "--no-plots",
                 "--no-progress", "--print-json"]) == 0
    top1 = json.loads(capsys.readouterr().out)["top1"]
    assert top1 > 40  # a model that learned something, so a wrong transform would show
    hub, onnx_file = tmp_path / "hub", tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "hub", "--output", str(hub)]) == 0
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--output", str(onnx_file)]) == 0

    config = json.loads((hub / "config.json").read_text())["pretrained_cfg"]
    assert config["input_size"] == [1, 28, 28] and config["crop_pct"] == 1.0
    assert config["mean"] == pytest.approx([0.286]) and config["std"] == pytest.approx([0.353])
    card = (hub / "README.md").read_text()
    assert f"| top1 | {top1:.6g} |" in card and "bridgeattn eval --checkpoint" in card

    images, labels = _val_images()
    model = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    batch = torch.stack([transform(img) for img in images])
    with torch.no_grad():
        hub_top1 = 100.0 * float((model(batch).argmax(1).numpy() == labels).mean())
    assert abs(hub_top1 - top1) <= 0.5, (hub_top1, top1)

    dims = onnx.load(str(onnx_file)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]  # dynamic batch, the run's size
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    stored = json.loads(session.get_modelmeta().custom_metadata_map["preprocessing"])
    assert stored["input_size"] == [1, 28, 28] and stored["mean"] == pytest.approx([0.286])
    logits = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    onnx_top1 = 100.0 * float((logits.argmax(1) == labels).mean())
    assert abs(onnx_top1 - top1) <= 0.5, (onnx_top1, top1)


@pytest.mark.onnx
def test_export_refuses_a_too_small_size_and_leaves_no_file(run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "small.onnx"
    assert main(["export", "--checkpoint", str(run), "--format", "onnx", "--output", str(out), "--img-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot run on 1x2x2 inputs" in err and err.count("\n") == 1
    assert not out.exists() and not any(p.name.startswith(".small.onnx") for p in tmp_path.iterdir())
