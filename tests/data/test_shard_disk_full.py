"""A full disk while writing shards: one line, exit 2, no half shard set left behind, and a rerun succeeds."""
from __future__ import annotations

import errno
import json

import pytest

from bridgeattn.cli.main import main
from bridgeattn.data.shards import META

wds = pytest.importorskip("webdataset")


@pytest.mark.parametrize("existing", [False, True], ids=["new-folder", "empty-folder"])
def test_a_full_disk_while_sharding_leaves_no_half_folder_and_a_rerun_succeeds(tmp_path, monkeypatch, capsys,
                                                                                existing):
    out = tmp_path / "shards"
    if existing:
        out.mkdir()
    write = wds.ShardWriter.write
    calls = []

    def full_disk(self, sample):  # the 2nd shard's first sample: the 1st tar is already on disk
        calls.append(1)
        if len(calls) > 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, sample)

    monkeypatch.setattr(wds.ShardWriter, "write", full_disk)
    args = ["shard", "--data", "synthetic:40", "--output", str(out), "--shard-size", "8"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and str(out) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["shards"] if existing else [])
    assert not existing or not any(out.iterdir())  # the empty folder stays as it was
    monkeypatch.setattr(wds.ShardWriter, "write", write)
    assert main(args) == 0
    meta = json.loads((out / META).read_text())
    assert sum(meta["train"]["counts"]) == meta["train"]["samples"] > 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]
