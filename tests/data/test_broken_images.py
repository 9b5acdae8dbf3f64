"""Broken files in an image folder: a training run skips and lists them, or stops at once with --strict-data."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bridgeattn import UserError
from bridgeattn.config import from_flat
from bridgeattn.engine import LaunchOptions, TrainConfig, train


def _image_folder(root) -> list[str]:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label, cls in enumerate(("cat", "dog")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = (rng.random((20, 20, 3)) * 80 + label * 150).astype(np.uint8)
                mode = "RGBA" if i == 1 else "RGB"  # mixed modes are converted, not refused
                Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    broken = [root / "train" / "cat" / "truncated.png", root / "train" / "dog" / "notes.jpg"]
    good = (root / "train" / "cat" / "0.png").read_bytes()
    broken[0].write_bytes(good[: len(good) // 2])
    broken[1].write_text("not an image")
    return [str(p) for p in broken]


def _config(root, output, **kwargs) -> tuple[TrainConfig, LaunchOptions]:
    return from_flat(dict(model="bav2_resnet20", data=f"folder:{root}", img_size=16, recipe="none", batch_size=4,
                          epochs=1, workers=0, progress=False, plots=False, output=str(output), **kwargs))


def test_broken_files_are_skipped_and_listed(tmp_path) -> None:
    broken = _image_folder(tmp_path / "data")
    summary = train(*_config(tmp_path / "data", tmp_path / "run"))
    assert summary["status"] == "finished"
    listed = (tmp_path / "run" / "skipped_files.txt").read_text().split()
    assert sorted(listed) == sorted(broken)


def test_strict_data_stops_before_training(tmp_path) -> None:
    _image_folder(tmp_path / "data")
    with pytest.raises(UserError, match="truncated.png|notes.jpg"):
        train(*_config(tmp_path / "data", tmp_path / "run", strict_data=True))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_folder_of_small_gray_images_trains_at_their_own_shape_and_says_so(tmp_path, caplog) -> None:
    for split in ("train", "val"):
        for label, cls in enumerate(("cat", "dog")):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("L", (12, 12), 60 * label + i).save(tmp_path / "data" / split / cls / f"{i}.png")
    config, options = from_flat(dict(model="bav2_resnet20", data=f"folder:{tmp_path / 'data'}", recipe="none",
                                     batch_size=4, epochs=1, workers=0, progress=False, plots=False,
                                     output=str(tmp_path / "run")))
    with caplog.at_level("INFO", logger="bridgeattn"):
        summary = train(config, options)
    assert summary["status"] == "finished"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("training "))
    assert "input 1x12x12 (from 8 sampled images)" in line
    # config.yaml records the shape the run trained at; eval keeps it after the folder gained larger RGB images
    import yaml

    from bridgeattn.tools.score import evaluate_checkpoint

    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (stored["img_size"], stored["in_chans"]) == (12, 1)
    for i in range(4, 12):
        Image.new("RGB", (40, 40), (i, 0, 0)).save(tmp_path / "data" / "val" / "cat" / f"{i}.png")
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**stored, "img_size": None, "in_chans": None}))
    with caplog.at_level("INFO", logger="bridgeattn"):  # as an earlier version's run: the size unset
        report = evaluate_checkpoint(tmp_path / "run", plots=False)
    assert report["count"] == 16
    assert "input 1x12x12 (from the weights)" in caplog.text
