"""Streaming shards: written then read back exactly; each sample once per epoch across ranks x workers; training."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bridgeattn.cli.main import main
from bridgeattn.config import from_flat
from bridgeattn.data import DataConfig, build_datasets
from bridgeattn.data import shards as shards_module
from bridgeattn.data.shard_writer import write_shards
from bridgeattn.data.shards import ShardSet
from bridgeattn.engine import train

wds = pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """synthetic:40 (40 train, 10 val samples) in shards of 7: uneven shards, a short last one."""
    folder = tmp_path_factory.mktemp("shards") / "synthetic"
    write_shards(DataConfig(spec="synthetic:40"), folder, shard_size=7)
    return folder


def _source():
    train_set, val_set, _ = build_datasets(DataConfig(spec="synthetic:40"))
    return {"train": train_set, "val": val_set}


def test_shards_read_back_give_exactly_the_source_images_and_labels(shard_dir):
    meta = json.loads((shard_dir / "shards.json").read_text())
    source = _source()
    assert meta["classes"] == source["train"].classes
    assert meta["preprocessing"]["img_size"] == 32 and meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    for split in ("train", "val"):
        assert meta[split]["counts"] == [7] * (meta[split]["samples"] // 7) + [meta[split]["samples"] % 7]
        urls = [str(shard_dir / name) for name in meta[split]["shards"]]
        seen = {}
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            image = np.array(Image.open(io.BytesIO(sample["png"])))
            seen[int(sample["__key__"])] = (torch.from_numpy(image).permute(2, 0, 1), int(sample["cls"]))
        ds = source[split]
        assert sorted(seen) == list(range(len(ds)))
        for index, (image, label) in seen.items():
            assert torch.equal(image, ds.images[index]) and label == int(ds.targets[index])
    stored_train_order = [int(s["__key__"]) for s in wds.WebDataset(str(shard_dir / "train-000000.tar"),
                                                                     shardshuffle=False, empty_check=False)]
    assert stored_train_order != sorted(stored_train_order)  # mixed classes in a shard


def _identity_set(shard_dir, split: str) -> ShardSet:
    meta = shards_module.read_meta(str(shard_dir))
    return ShardSet(str(shard_dir), meta, split, transform=lambda x: x, mode="RGB", tensor_input=True)


def _keys(images: torch.Tensor, index: dict[bytes, int]) -> list[int]:
    return [index[img.numpy().tobytes()] for img in images]


@pytest.mark.parametrize("split", ["train", "val"])
def test_each_sample_once_per_epoch_across_two_ranks_and_two_workers(shard_dir, split, monkeypatch):
    source = _source()[split]
    index = {img.numpy().tobytes(): i for i, img in enumerate(source.images)}
    shards = _identity_set(shard_dir, split)
    orders = []
    for epoch in range(2):
        keys, lengths = [], []
        for rank in range(2):
            batches = shards.batches(4, rank=rank, world_size=2, workers=2, train=split == "train", seed=3)
            batches.set_epoch(epoch)
            got = 0
            for worker in range(2):  # what each of the two loader workers of this rank reads
                monkeypatch.setattr(shards_module, "get_worker_info",
                                    lambda w=worker: SimpleNamespace(id=w, num_workers=2))
                for images, labels in batches:
                    got += 1
                    assert len(images) <= 4 and (split == "val" or len(images) == 4)
                    new = _keys(images, index)
                    assert labels.tolist() == [int(source.targets[k]) for k in new]
                    keys += new
            assert got == len(batches)
            lengths.append(got)
        assert sorted(keys) == list(range(len(source)))  # every sample exactly once
        assert lengths[0] == lengths[1]  # the ranks take the same number of steps
        orders.append(keys)
    if split == "train":
        assert orders[0] != orders[1]  # reshuffled each epoch


def test_persistent_loader_workers_follow_the_epoch(shard_dir):
    source = _source()["train"]
    index = {img.numpy().tobytes(): i for i, img in enumerate(source.images)}
    batches = _identity_set(shard_dir, "train").batches(5, workers=2, train=True)
    loader = DataLoader(batches, batch_size=None, num_workers=2, persistent_workers=True)
    orders = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        orders.append([k for images, _ in loader for k in _keys(images, index)])
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(40)) and orders[0] != orders[1]


def test_training_from_shards_takes_the_steps_of_the_source(tmp_path, shard_dir):
    common = dict(model="bav2_resnet20", img_size=16, batch_size=8, lr=1e-3, epochs=1, workers=0,
                  warmup_epochs=0, progress=False, plots=False)
    streamed = train(*from_flat(dict(data=f"wds:{shard_dir}", output=str(tmp_path / "wds"), **common)))
    direct = train(*from_flat(dict(data="synthetic:40", output=str(tmp_path / "direct"), **common)))
    assert streamed["steps"] == direct["steps"] == 5 and streamed["num_classes"] == 10
    rows = [json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1]) for name in ("wds", "direct")]
    assert rows[0]["train_samples"] == rows[1]["train_samples"] == 40
    assert rows[0]["val_samples"] == rows[1]["val_samples"] == 10
    # eval streams the val shards too, split over its loader workers: every image once, the stored accuracy
    from bridgeattn.tools.score import evaluate_checkpoint

    again = evaluate_checkpoint(tmp_path / "wds", workers=2, plots=False)
    assert again["count"] == 10 and again["top1"] == pytest.approx(streamed["top1"])


def test_shard_command_writes_and_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["shard", "--data", "synthetic:20", "--output", str(out), "--shard-size", "8"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shards.json", "train-000000.tar", "train-000001.tar",
                                                      "train-000002.tar", "val-000000.tar"]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not an empty folder" in err and len(err.splitlines()) == 1
