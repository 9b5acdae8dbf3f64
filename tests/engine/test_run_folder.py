"""A run folder under faults: one run at a time, atomic files, checkpoints nobody asked to delete stay."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

from bridgeattn.config import from_flat
from bridgeattn.engine import checkpoint as ckpt
from bridgeattn.engine import find_resume, load_checkpoint, records, train
from bridgeattn.engine.runlock import RunLock
from bridgeattn.errors import UserError
from bridgeattn.files import TEMP_MARK, write_json

TINY = dict(model="bav2_resnet20", data="synthetic:128", img_size=16, batch_size=32, lr=3e-3, epochs=2, workers=0,
            warmup_epochs=0.5, progress=False, plots=False, deterministic=True)
TINY_FLAGS = ["--model", "bav2_resnet20", "--data", "synthetic:128", "--img-size", "16", "--batch-size", "32",
              "--workers", "0", "--no-progress", "--no-plots", "--deterministic"]


def _wait_for(predicate, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended early: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.05)


@pytest.mark.multiprocess
def test_second_run_on_a_live_folder_is_refused_and_the_first_finishes_intact(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    first = subprocess.Popen([sys.executable, "-m", "bridgeattn", "train", *TINY_FLAGS, "--epochs", "3",
                              "--output", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    lock = run / ".lock"
    _wait_for(lambda: lock.is_file() and lock.read_text().startswith(f"{first.pid} "), proc=first)
    with pytest.raises(UserError) as refused:
        train(*from_flat(dict(output=str(run), resume="auto", **TINY)))
    message = str(refused.value)
    assert "\n" not in message
    assert f"in use by another run (pid {first.pid} on {socket.gethostname()})" in message
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert find_resume(run).name == "epoch-0003.pth"
    for _, path in ckpt.epoch_files(run / "checkpoints"):
        assert ckpt.check(path) is None, path


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    pid = os.fork()
    if pid == 0:  # the child takes the lock and dies without releasing it
        try:
            RunLock(tmp_path).acquire()
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (tmp_path / ".lock").read_text().split()[0] == str(pid)  # the dead holder's name is still written
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(UserError, match=f"in use by another run \\(pid {os.getpid()} on "):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released at the end of the run
        pass


def test_full_disk_while_writing_config_yaml_leaves_the_old_one(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    records.RunRecorder(folder, from_flat(TINY)[0]).close()
    before = (folder / "config.yaml").read_text()
    assert yaml.safe_load(before)["model"] == "bav2_resnet20"

    def full_disk(cfg, path):
        Path(path).write_text("model: plain_res")  # part of the text made it before the disk filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(records, "dump_yaml", full_disk)
    with pytest.raises(OSError, match="No space left"):
        records.RunRecorder(folder, from_flat(dict(TINY, model="plain_resnet20"))[0])
    assert (folder / "config.yaml").read_text() == before
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]  # no temp file left behind


@pytest.mark.parametrize("content", ["", "model: [unclosed\n", "just a string\n"])
def test_resume_refuses_a_run_whose_stored_config_is_unreadable(tmp_path, content):
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(content)
    with pytest.raises(UserError, match="config.yaml (is empty|cannot be read).*settings are unknown"):
        train(*from_flat(dict(output=str(folder), resume="auto", **TINY)))
    assert not (folder / "summary.json").exists()


def test_json_files_are_valid_even_for_non_finite_numbers(tmp_path):
    write_json(tmp_path / "a.json", {"loss": float("nan"), "rows": [1.0, float("inf")], "ok": 2.5})
    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=pytest.fail) == {
        "loss": None, "rows": [1.0, None], "ok": 2.5}


# ----------------------------------------------------------------------------------------- checkpoint files

def _state(epoch: int, best_epoch: int, value: float = 0.0) -> dict:
    return {"model": {"w": torch.full((2,), value)}, "epoch": epoch, "step": 4 * epoch, "best_epoch": best_epoch,
            "config": {}}


def test_a_kill_between_writing_the_best_checkpoint_and_its_link_never_costs_the_best(tmp_path):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(_state(1, 1), tmp_path, is_best=True)
    ckpt.save_checkpoint(_state(2, 2), tmp_path, is_best=True)
    # the state a kill just before the best.pth update leaves: epoch 2 written, the link still on epoch 1
    (folder / "best.pth").unlink()
    (folder / "best.pth").symlink_to("epoch-0001.pth")
    ckpt.save_checkpoint(_state(3, 2), tmp_path, is_best=False)  # the resumed run's next epoch
    assert (folder / "epoch-0002.pth").is_file() and ckpt.check(folder / "epoch-0002.pth") is None
    assert (folder / "best.pth").resolve().name == "epoch-0002.pth"
    assert not (folder / "epoch-0001.pth").exists()  # neither newest nor best: pruned as before


def test_a_non_finite_checkpoint_is_never_best_nor_last_good(tmp_path):
    ckpt.save_checkpoint(_state(1, 1), tmp_path, is_best=True, keep=5)
    bad = _state(2, 1, value=float("nan"))
    assert not ckpt.is_good(bad, 0.5) and not ckpt.is_good(_state(2, 1), float("nan"))
    ckpt.save_checkpoint(bad, tmp_path, is_best=True, keep=5, good=False)
    assert (tmp_path / "checkpoints" / "best.pth").resolve().name == "epoch-0001.pth"
    assert find_resume(tmp_path).name == "epoch-0002.pth"
    assert find_resume(tmp_path, good_only=True).name == "epoch-0001.pth"


def test_nan_batchnorm_statistics_never_make_a_best_checkpoint(tmp_path, monkeypatch):
    import importlib

    engine_train = importlib.import_module("bridgeattn.engine.train")
    real_evaluate = engine_train._evaluate

    def poisoned(run):
        bn = next(m for m in run.model.modules() if isinstance(m, nn.BatchNorm2d))
        bn.running_var.fill_(float("nan"))  # as after an overflow in a forward pass: finite loss, NaN stats
        return real_evaluate(run)

    monkeypatch.setattr(engine_train, "_evaluate", poisoned)
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), **dict(TINY, epochs=1))))
    assert summary["best_top1"] is None and summary["top1"] >= 0
    assert not (tmp_path / "run" / "checkpoints" / "best.pth").exists()
    assert find_resume(tmp_path / "run", good_only=True) is None
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=pytest.fail)


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "run"
    train(*from_flat(dict(output=str(folder), keep=5, **dict(TINY, epochs=3))))
    return folder


def test_resume_from_an_older_checkpoint_deletes_nothing(three_epochs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(three_epochs, run, symlinks=True)
    old = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("epoch-*.pth")}
    assert sorted(old) == ["epoch-0001.pth", "epoch-0002.pth", "epoch-0003.pth"]
    stale_temp = run / "checkpoints" / f".epoch-0004.pth{TEMP_MARK}99999"  # a kill mid-save left it
    stale_temp.write_bytes(b"\0" * 1024)
    summary = train(*from_flat(dict(output=str(run), resume=str(run / "checkpoints" / "epoch-0001.pth"),
                                keep=5, **dict(TINY, epochs=3))))
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert not stale_temp.exists()
    aside = run / "checkpoints" / "superseded"
    assert {p.name: p.read_bytes() for p in aside.glob("*.pth")} == {k: old[k] for k in ("epoch-0002.pth",
                                                                                         "epoch-0003.pth")}
    assert (run / "checkpoints" / "epoch-0001.pth").read_bytes() == old["epoch-0001.pth"]
    # deterministic: the branch recomputed from epoch 1 equals the original epochs 2 and 3
    again = load_checkpoint(run / "checkpoints" / "epoch-0003.pth")["model"]
    first = load_checkpoint(aside / "epoch-0003.pth")["model"]
    assert all(torch.equal(again[k], first[k]) for k in first)
