"""BA-ResNet backbones in torchvision detection and segmentation models (tiny, 64 px, a few steps)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bridgeattn
from bridgeattn.layers.freeze import FrozenBatchNorm1d
from bridgeattn.models.detection import create_detector, create_features, create_segmentation_model


def _example_module(name: str):
    """A module of examples/ (the synthetic data lives beside the example that uses it, not in the library)."""
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synthetic_detection_set = _example_module("synthetic_shapes").synthetic_detection_set

SIZE = 64


def _no_masks(target: dict) -> dict:
    return {k: v for k, v in target.items() if k != "masks"}


def test_faster_rcnn_loss_falls_with_frozen_gate_statistics() -> None:
    data = synthetic_detection_set(4, SIZE, num_classes=3, seed=0)
    model = create_detector(3, "bav2_resnet18", min_size=SIZE, max_size=SIZE, fpn_channels=64,
                            rpn_post_nms_top_n_train=100, box_batch_size_per_image=64)
    body = model.backbone.body
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)) for m in body.modules())
    gate_norm = body.layer3[0].ba.norm
    assert isinstance(gate_norm, FrozenBatchNorm1d)
    frozen_before = {k: v.clone() for k, v in body.state_dict().items() if "running" in k}

    images, targets = [x for x, _ in data], [_no_masks(t) for _, t in data]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.75 * losses[0], losses
    assert all(torch.equal(v, body.state_dict()[k]) for k, v in frozen_before.items())
    assert body.layer3[0].ba.integration[0].weight.grad is not None  # the gate itself still trains

    model.eval()
    with torch.no_grad():
        out = model([images[0]])[0]
    assert out["boxes"].shape[1] == 4 and out["boxes"].shape[0] == out["scores"].shape[0] == out["labels"].shape[0]


def test_mask_rcnn_trains_one_step() -> None:
    data = synthetic_detection_set(2, SIZE, num_classes=2, seed=1)
    model = create_detector(2, "bav1_resnet18", mask=True, min_size=SIZE, max_size=SIZE, fpn_channels=32,
                            rpn_post_nms_top_n_train=50, box_batch_size_per_image=16)
    losses = model.train()([x for x, _ in data], [t for _, t in data])
    assert {"loss_mask", "loss_classifier", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    assert model.backbone.body.layer4[0].ba.generation.weight.grad is not None


def test_segmentation_head_on_the_same_backbone_learns() -> None:
    data = synthetic_detection_set(2, SIZE, num_classes=3, seed=2)
    images = torch.stack([x for x, _ in data])
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.int64)
    for i, (_, t) in enumerate(data):
        for mask, label in zip(t["masks"], t["labels"]):
            labels[i][mask.bool()] = label
    model = create_segmentation_model(3, "bav2_resnet18", head="fcn")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(6):
        out = model(images)["out"]
        assert out.shape == (2, 3, SIZE, SIZE)
        loss = F.cross_entropy(out, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < losses[0], losses
    deeplab = create_segmentation_model(3, "bav2_resnet18", head="deeplabv3").eval()
    with torch.no_grad():
        assert deeplab(images[:1])["out"].shape == (1, 3, SIZE, SIZE)


def test_backbone_starts_from_saved_classification_weights(tmp_path) -> None:
    classifier = bridgeattn.create_model("bav2_resnet20")
    with torch.no_grad():
        classifier.layer2[0].ba.generation.weight.add_(1.0)
    folder = bridgeattn.save_pretrained(classifier, tmp_path / "cls")
    body = create_features("bav2_resnet20", trainable_stages=1, pretrained=True,
                           pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert torch.equal(body.layer2[0].ba.generation.weight, classifier.layer2[0].ba.generation.weight)
    trainable = {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3"}


def test_the_example_refuses_an_unknown_model_and_missing_weights_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "examples"))
    example = _example_module("detection")
    assert example.main(["--model", "bav2_resnet2", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detection.py: error: unknown model 'bav2_resnet2'") and "bav2_resnet20" in err
    assert len(err.strip().splitlines()) == 1
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(SystemExit) as stop:
        example.main(["--weights", str(missing), "--model", "bav2_resnet18"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == f"detection.py: error: --weights {missing}: no such file\n"
