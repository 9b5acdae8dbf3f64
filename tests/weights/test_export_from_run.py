"""A training run goes straight to deployment: export reads the model name and shapes from the run."""
from __future__ import annotations

import pytest
import torch

from bridgeattn import UserError
from bridgeattn.config import from_flat
from bridgeattn.engine import load_checkpoint, train
from bridgeattn.weights.loading import load_model


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "run"
    train(*from_flat(dict(model="bav2_resnet20", data="synthetic:64", img_size=16, in_chans=1, batch_size=32, epochs=1,
                      workers=0, progress=False, plots=False, model_kwargs={"rd_ratio": 0.25}, output=str(folder))))
    return folder


def test_export_model_from_run_folder_and_checkpoint(run_folder) -> None:
    stored = load_checkpoint(run_folder / "checkpoints" / "last.pth")["model"]
    for source in (run_folder, run_folder / "checkpoints" / "last.pth"):
        loaded = load_model(source)
        model = loaded.model
        assert model.layer3[0].ba.hidden_channels == 16  # stored model_kwargs restored: 64 * 1/4 (default: 8)
        assert model.conv1.in_channels == 1 and model.num_classes == 10
        assert loaded.preprocessing.input_size == (1, 16, 16)
        for key, value in model.state_dict().items():
            assert torch.equal(value, stored[key]), key


def test_export_without_model_name_needs_a_training_checkpoint(tmp_path) -> None:
    path = tmp_path / "bare.pth"
    torch.save({"fc.weight": torch.zeros(10, 64)}, path)
    with pytest.raises(UserError, match="pass --model NAME"):
        load_model(path)


def test_a_hub_export_describes_the_run_not_the_default_weights(run_folder, tmp_path) -> None:
    import json

    from bridgeattn.cli.main import main

    assert main(["export", "--checkpoint", str(run_folder), "--format", "hub", "--output", str(tmp_path / "h")]) == 0
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    card = (tmp_path / "h" / "README.md").read_text()
    assert config["pretrained_cfg"]["tag"] == "run" and config["pretrained_cfg"]["paper_ids"] == "arXiv:2410.07860"
    assert config["data"] == "synthetic:64" and "init_from" not in config
    assert "synthetic:64" in card and "`run`" in card and "from its own initialisation" in card
