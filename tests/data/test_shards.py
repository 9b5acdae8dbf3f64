"""Streaming shards: written then read back exactly; each sample once per epoch across ranks x workers; training."""
from __future__ import annotations

import io
import json
import re
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
from bridgeattn.data.shards import ShardBatches, ShardSet
from bridgeattn.engine import train
from bridgeattn.errors import UserError

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
            batches = ShardBatches(shards, 4, rank=rank, world_size=2, workers=2, train=split == "train", seed=3)
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
    batches = ShardBatches(_identity_set(shard_dir, "train"), 5, workers=2, train=True)
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


def _copy(shard_dir, tmp_path, edit=None):
    """A copy of the shard set whose shards.json ``edit(meta)`` may change."""
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(shard_dir, folder)
    if edit is not None:
        meta = json.loads((folder / "shards.json").read_text())
        edit(meta)
        (folder / "shards.json").write_text(json.dumps(meta))
    return folder


def _drop_sizes(meta):  # as written before shards.json recorded byte sizes
    for split in ("train", "val"):
        del meta[split]["bytes"]


@pytest.mark.parametrize("sizes", [True, False])
def test_a_truncated_shard_is_named_before_training(shard_dir, tmp_path, capsys, sizes):
    folder = _copy(shard_dir, tmp_path, None if sizes else _drop_sizes)
    build_datasets(DataConfig(spec=f"wds:{folder}"))  # intact, with or without recorded sizes
    tar = folder / "train-000002.tar"
    full = tar.stat().st_size
    with open(tar, "r+b") as f:  # truncate -s HALF
        f.truncate(full // 2)
    expected = f"is {full // 2} bytes, shards.json says {full}" if sizes else "is damaged: .* cut short"
    with pytest.raises(UserError, match=f"train shard train-000002.tar {expected}"):
        build_datasets(DataConfig(spec=f"wds:{folder}"))
    argv = ["train", "--data", f"wds:{folder}", "--model", "bav2_resnet20", "--img-size", "16", "--batch-size", "8",
            "--epochs", "1", "--workers", "0", "--no-progress", "--no-plots", "--output", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train-000002.tar" in err and len(err.splitlines()) == 1


def _set_label(tar, index: int, label: bytes, ext: str = "cls") -> None:
    """Rewrite the ``.cls`` (or ``ext``) member of sample ``index`` of ``tar``."""
    import tarfile

    with tarfile.open(tar) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    cls = [i for i, (m, _) in enumerate(members) if m.name.endswith(f".{ext}")][index]
    members[cls] = (members[cls][0], label)
    with tarfile.open(tar, "w") as out:
        for member, data in members:
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))


def _more_samples(meta):
    meta["train"]["counts"][0] += 2
    meta["train"]["samples"] += 2


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(classes=[]), "'classes' must list at least one class name"),
    (lambda m: m["train"]["counts"].__setitem__(0, -1), "'train' needs its shard names and as many sample counts"),
    (lambda m: m["val"]["shards"].__setitem__(0, "../../../../etc/hostname"), "shard name '../../../../etc/hostname' "
                                                                              "is not a file name inside"),
    (lambda m: m["val"]["shards"].__setitem__(0, "pipe:cat /etc/hostname"), "is not a file name inside"),
    (lambda m: m["val"].update(samples=99), "'val' says 99 samples, its counts add up to 10"),
    (_more_samples, "train shard train-000000.tar holds 7 samples, shards.json says 9"),
    ("label", "train shard train-000001.tar: sample 3 has a bad .cls label \\(99\\), not a class index below 10"),
])
def test_shards_json_and_labels_are_checked_against_the_tars(shard_dir, tmp_path, edit, match):
    folder = _copy(shard_dir, tmp_path, None if edit == "label" else edit)
    if edit == "label":
        _set_label(folder / "train-000001.tar", 3, b"99")
        meta = json.loads((folder / "shards.json").read_text())
        meta["train"]["bytes"][1] = (folder / "train-000001.tar").stat().st_size
        (folder / "shards.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=match) as err:
        build_datasets(DataConfig(spec=f"wds:{folder}"))
    assert "\n" not in str(err.value)


def test_a_shard_failing_while_streaming_keeps_the_planned_steps(shard_dir, tmp_path, caplog):
    folder = _copy(shard_dir, tmp_path)
    shards = _identity_set(folder, "train")
    batches = ShardBatches(shards, 4, train=True, seed=1)
    tar = folder / "train-000003.tar"  # broken after the check, while the run goes on
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 3])
    with caplog.at_level("WARNING", logger="bridgeattn"):
        got = [labels for _, labels in batches]
    assert len(got) == len(batches) == 10 and all(len(labels) == 4 for labels in got)
    assert re.search(r"train-000003.tar: read [0-6] of the 7 samples asked for \(ReadError", caplog.text)
    assert "skipping the rest of this shard" in caplog.text


def test_an_out_of_range_label_while_streaming_names_the_shard(shard_dir, tmp_path):
    folder = _copy(shard_dir, tmp_path)
    shards = _identity_set(folder, "val")
    _set_label(folder / "val-000000.tar", 2, b"99")  # after the check
    with pytest.raises(UserError, match="val-000000.tar: sample .* has label 99, not a class index below 10"):
        list(shards)


@pytest.mark.parametrize("fmt", ["PAX_FORMAT", "GNU_FORMAT", "USTAR_FORMAT"])
def test_tar_header_walk_groups_samples_as_webdataset_does(tmp_path, fmt):
    import tarfile

    path = tmp_path / "hand-made.tar"
    long = "n01440764/" + "x" * 120 if fmt != "USTAR_FORMAT" else "d" * 60 + "/" + "x" * 60  # ustar: prefix/name
    files = [(f"{long}_{i}.{ext}", data) for i, label in enumerate([3, 0, 7])
             for ext, data in (("jpg", b"\xff" * 700), ("cls", str(label).encode()))]
    files[2:2] = [("__meta__", b"{}"), ("folder", None), ("README", b"no extension")]  # not samples
    files.append(("nolabel_9.jpg", b"1"))
    with tarfile.open(path, "w", format=getattr(tarfile, fmt)) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    labels = shards_module.tar_labels(path)
    assert labels == [3, 0, 7, None]
    assert len(list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))) == 4
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="cut short"):
        shards_module.tar_labels(path)


def test_an_image_that_does_not_decode_is_replaced_with_a_warning(shard_dir, tmp_path, caplog):
    folder = _copy(shard_dir, tmp_path)
    shards = _identity_set(folder, "val")
    strip = io.BytesIO()
    Image.new("RGB", (3200, 1)).save(strip, format="PNG")  # decodes, but past the aspect-ratio bound
    _set_label(folder / "val-000000.tar", 1, b"not a png", ext="png")
    _set_label(folder / "val-000001.tar", 0, strip.getvalue(), ext="png")
    with caplog.at_level("WARNING", logger="bridgeattn"):
        items = list(shards)
    assert len(items) == 10 and torch.equal(items[1][0], items[0][0]) and torch.equal(items[7][0], items[6][0])
    assert "skipping unreadable sample" in caplog.text and "extreme aspect ratio: 3200x1" in caplog.text
