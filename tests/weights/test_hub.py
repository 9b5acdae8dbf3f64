"""Hub-style folders: save/load round trip, model card, timm's local-file loading."""
from __future__ import annotations

import json

import pytest
import timm
import torch

import bridgeattn


def _trained_looking(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every tensor so a load that silently kept fresh weights cannot pass."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.1)
    return model.eval()


def test_save_and_load_round_trip_with_args_and_metrics(tmp_path) -> None:
    model = _trained_looking(bridgeattn.create_model("bav2_resnet20", num_classes=7, in_chans=1, rd_ratio=0.25))
    folder = bridgeattn.save_pretrained(model, tmp_path / "ba", metrics={"top1": 91.234, "dataset": "fashion-mnist"})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "bav2_resnet20"
    assert config["model_args"]["rd_ratio"] == 0.25 and config["model_args"]["in_chans"] == 1
    assert config["metrics"]["top1"] == 91.234
    card = (folder / "README.md").read_text()
    assert "| top1 | 91.234 |" in card and "bav2_resnet20" in card and "2410.07860" in card

    loaded = bridgeattn.from_pretrained(folder).eval()
    assert loaded.num_classes == 7 and loaded.layer1[0].ba.hidden_channels == model.layer1[0].ba.hidden_channels
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    fine_tune = bridgeattn.from_pretrained(folder, num_classes=5)  # a new head, the rest as saved
    assert fine_tune.num_classes == 5 and torch.equal(fine_tune.conv1.weight, model.conv1.weight)
    # timm reads the same folder directly.
    with torch.no_grad():
        assert torch.equal(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x), model(x))


def test_the_saved_config_claims_no_provenance_of_the_default_weights(tmp_path) -> None:
    model = bridgeattn.create_model("bav2_resnet18", channels=(4, 4, 8, 8))  # default cfg: .from_a1_in1k
    assert model.pretrained_cfg["tag"] == "from_a1_in1k"
    for run in ({}, {"name": "fm18", "data": "folder:fm", "init_from": "resnet18.a1_in1k"}):
        folder = bridgeattn.save_pretrained(model, tmp_path / str(len(run)), run=run)
        config = json.loads((folder / "config.json").read_text())
        card = (folder / "README.md").read_text()
        assert config["pretrained_cfg"]["paper_ids"] == "arXiv:2410.07860" and "2110.00476" not in card
        assert config["pretrained_cfg"].get("tag") == run.get("name")
        assert config.get("init_from") == run.get("init_from")
        assert ("warm-started from `resnet18.a1_in1k`" in card) == bool(run) and "from_a1_in1k" not in card
    assert model.pretrained_cfg["tag"] == "from_a1_in1k"  # the model itself is left as it was


def test_create_model_pretrained_from_a_local_file(tmp_path) -> None:
    model = _trained_looking(bridgeattn.create_model("bav1_resnet20"))
    folder = bridgeattn.save_pretrained(model, tmp_path / "ba")
    loaded = bridgeattn.create_model(
        "bav1_resnet20", pretrained=True, pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors"))
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_user_errors(tmp_path) -> None:
    with pytest.raises(bridgeattn.UserError, match="no config.json"):
        bridgeattn.from_pretrained(tmp_path)
    features = bridgeattn.create_model("bav2_resnet20", features_only=True)
    with pytest.raises(bridgeattn.UserError, match="classification model"):
        bridgeattn.save_pretrained(features, tmp_path / "f")
