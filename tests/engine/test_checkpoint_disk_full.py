"""A full disk while a checkpoint is written: one line, exit 2, summary.json says "failed", the last checkpoint
stays intact, no temp file is left, and ``--resume auto`` finishes the run."""
from __future__ import annotations

import errno
import json

import torch

from bridgeattn.cli.main import main
from bridgeattn.weights import checkpoint as ckpt

TINY = ["--data", "synthetic:64", "--img-size", "16", "--batch-size", "16", "--epochs", "2", "--workers", "0",
        "--no-progress", "--no-plots", "--model", "bav2_resnet20"]


def test_a_full_disk_at_the_second_checkpoint_fails_cleanly_and_resume_finishes(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    save = torch.save
    calls = []

    def full_disk(obj, f, *args, **kwargs):  # the 2nd epoch's checkpoint: half written, then the disk is full
        calls.append(1)
        if len(calls) == 2:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    assert main(["train", *TINY, "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write checkpoint" in err[0] and "No space left on device" in err[0]
    assert "epoch-0001.pth" in err[0]  # the last good checkpoint is named
    first = run / ckpt.CKPT_DIR / "epoch-0001.pth"
    assert ckpt.check(first) is None and not (run / ckpt.CKPT_DIR / "epoch-0002.pth").exists()
    temps = [p for p in run.rglob("*") if ".bridgeattn-tmp-" in p.name]
    assert temps == []
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["message"]
    assert summary["epochs"] == 2  # epoch 2 was trained; only its checkpoint is missing

    monkeypatch.setattr(ckpt.torch, "save", save)
    assert main(["train", "--output", str(run), "--resume", "auto", "--no-progress"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2
    assert ckpt.check(run / ckpt.CKPT_DIR / "epoch-0002.pth") is None


def test_a_full_disk_at_the_checksum_record_removes_the_unrecorded_checkpoint(tmp_path, monkeypatch):
    state = {"epoch": 1, "step": 4, "model": {"w": torch.zeros(2)}}
    ckpt.save_checkpoint(state, tmp_path, is_best=False)

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "write_text", full_disk)
    try:
        ckpt.save_checkpoint({**state, "epoch": 2, "step": 8}, tmp_path, is_best=False)
    except ckpt.UserError as exc:
        assert "the last good checkpoint is" in str(exc) and str(exc).endswith("epoch-0001.pth")
    else:
        raise AssertionError("no UserError")
    assert sorted(p.name for p in (tmp_path / ckpt.CKPT_DIR).iterdir()) == [
        "epoch-0001.pth", "epoch-0001.pth.json", "last.pth"]
