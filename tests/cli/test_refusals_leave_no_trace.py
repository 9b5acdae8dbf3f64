"""A refused or failed command leaves no trace, nothing a user owns is deleted or overwritten, and a folder in use
(by a run or a comparison) is never touched by a second command."""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest

from bridgeattn.cli.main import main
from bridgeattn.config import OPTIONS, make_config
from bridgeattn.engine.runlock import RunLock
from bridgeattn.errors import UserError
from bridgeattn.files import is_temp, temp_path

TINY = ["--model", "bav2_resnet20", "--data", "synthetic:64", "--img-size", "16", "--batch-size", "16",
        "--epochs", "1", "--workers", "0", "--no-progress", "--no-plots"]




def _one_line(status: int, err: str, *words: str) -> None:
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"/" for p in sorted(folder.rglob("*"))}


# the first ones are found by the configuration's checks, the others only once the data, the model or the
# optimizer are built, after the run folder was locked
LATE_AND_EARLY = [
    (["--seed", "-1"], "--seed"),
    (["--lr", "nan"], "--lr"),
    (["--opt-betas", "2,3"], "--opt-betas"),
    (["--momentum", "5"], "--momentum"),
    (["--in-chans", "7"], "7"),
    (["--data", "folder:EMPTY"], "EMPTY"),
    (["--data", "folder:/nonexistent/imagenet"], "/nonexistent/imagenet"),
    (["--opt", "nosuchopt"], "nosuchopt"),
]


@pytest.mark.parametrize("flags, words", LATE_AND_EARLY, ids=[" ".join(f) for f, _ in LATE_AND_EARLY])
def test_a_refused_train_creates_no_folder_and_changes_none(flags, words, tmp_path, run_cli):
    (tmp_path / "empty-data").mkdir()
    flags = [f.replace("EMPTY", str(tmp_path / "empty-data")) for f in flags]
    words = words.replace("EMPTY", str(tmp_path / "empty-data"))
    _one_line(*run_cli(["train", *TINY, *flags, "--output", str(tmp_path / "new" / "run")]), words)
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"  # an empty folder the user made stays as it was
    mine.mkdir()
    _one_line(*run_cli(["train", *TINY, *flags, "--output", str(mine)]), words)
    assert list(mine.iterdir()) == []


def test_a_refused_compare_creates_no_folder(tmp_path, run_cli):
    argv = ["compare", "--models", "bav2", "--seeds", "1", *TINY[2:], "--data", "folder:/nonexistent/x",
            "--no-speed", "--output", str(tmp_path / "new" / "cmp")]
    _one_line(*run_cli(argv), "/nonexistent/x")
    assert not (tmp_path / "new").exists()
    _one_line(*run_cli(["compare", "--seed-list", "-1", "--output", str(tmp_path / "cmp")]), "negative")


def test_workers_refusing_a_launched_run_leave_no_folder(tmp_path, run_cli, monkeypatch):
    from bridgeattn.engine import distributed

    monkeypatch.setattr(distributed, "launch_torchrun", lambda *a, **k: 2)  # as when every rank exits with 2
    status, _ = run_cli(["train", *TINY, "--nproc", "2", "--output", str(tmp_path / "new" / "run")])
    assert status == 2 and not (tmp_path / "new").exists()


def test_seed_is_checked_before_config_yaml_is_written(tmp_path, run_cli):
    run = tmp_path / "run"
    _one_line(*run_cli(["train", *TINY, "--seed", str(2**64), "--output", str(run)]), "--seed")
    assert not run.exists()
    assert main(["train", *TINY, "--seed", str(2**63 - 1), "--output", str(run)]) == 0  # the largest one trains


@pytest.mark.parametrize("opt", [o for o in OPTIONS.values() if o.kind in (float, list)], ids=lambda o: o.key)
def test_every_float_option_has_a_range(opt):
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(UserError, match=opt.flag):
            make_config({opt.key: [bad, 0.9] if opt.kind is list else bad}).validate()


@pytest.mark.parametrize("key, value", [("momentum", 5), ("momentum", 1.0), ("opt_betas", [0.9, 1.0]),
                                        ("smoothing", 1.0), ("seed", -1)])
def test_values_above_a_range_are_refused(key, value):
    with pytest.raises(UserError, match=f"--{key.replace('_', '-')}"):
        make_config({key: value}).validate()


def test_only_the_package_temp_files_count_as_temp_files(tmp_path):
    assert is_temp(temp_path(tmp_path / "epoch-0001.pth"))
    for name in (".notes.tmp-1", ".x.bridgeattn-tmp-", "a.bridgeattn-tmp-1", ".x.bridgeattn-tmp-1.bak"):
        assert not is_temp(tmp_path / name), name


def test_a_users_folder_is_refused_unless_overwrite_and_their_files_stay(tmp_path, run_cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".notes.tmp-1").write_text("my notes")
    (mine / "per_class.csv").write_text("mine")
    before = _tree(mine)
    _one_line(*run_cli(["train", *TINY, "--output", str(mine)]), "--overwrite", "per_class.csv")
    assert _tree(mine) == before  # no lock file either
    status, err = run_cli(["train", *TINY, "--overwrite", "--output", str(mine)])
    assert status == 0, err
    assert (mine / ".notes.tmp-1").read_text() == "my notes"  # not taken for a temp file of the package
    assert (mine / "per_class.csv").read_text() != "mine" and (mine / "summary.json").is_file()


def test_a_stray_torchrun_environment_is_one_line(tmp_path, run_cli, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    _one_line(*run_cli(["train", *TINY, "--output", str(tmp_path / "run")]), "MASTER_ADDR", "torchrun")
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", *TINY, "--output", str(run)]) == 0
    return run


def test_eval_into_a_live_run_is_refused(finished_run, tmp_path, run_cli):
    eval_argv = ["eval", "--checkpoint", str(finished_run), "--no-progress", "--no-plots"]
    with RunLock(finished_run):  # as while the run still trains
        _one_line(*run_cli(eval_argv), f"in use by another run (pid {os.getpid()} on {socket.gethostname()})")
        assert not (finished_run / "eval").exists()
        assert main([*eval_argv, "--output", str(tmp_path / "elsewhere")]) == 0  # outside the run: allowed
    assert main(eval_argv) == 0 and (finished_run / "eval" / "eval.json").is_file()


def _interrupted_cell(out: Path) -> Path:
    cell = out / "cells" / "bav2_resnet20" / "seed0"
    (cell / "run" / "checkpoints").mkdir(parents=True)
    (cell / "run" / "config.yaml").write_text("model: bav2_resnet20\n")
    (cell / "run" / "checkpoints" / "epoch-0001.pth").write_bytes(b"weights of the live run")
    return cell


def test_a_second_compare_on_a_live_comparison_is_refused_and_touches_nothing(tmp_path, run_cli):
    out = tmp_path / "cmp"
    _interrupted_cell(out)
    argv = ["compare", "--models", "bav2", "--seeds", "1", *TINY[2:], "--no-speed", "--output", str(out)]
    with RunLock(out):  # the first comparison, training its cell
        before = _tree(out)
        _one_line(*run_cli(argv), f"in use by another run (pid {os.getpid()} on")
        assert _tree(out) == before


def test_a_cell_in_use_is_refused_and_touches_nothing(tmp_path, monkeypatch):
    from bridgeattn.tools import compare
    from bridgeattn.tools.compare import CompareConfig, run_compare

    monkeypatch.setattr(compare, "_train", lambda options: pytest.fail("trained a cell in use"))
    monkeypatch.setattr(compare, "_data_shape", lambda cfg: (10, 3, 16))
    out = tmp_path / "cmp"
    cell = _interrupted_cell(out)
    cfg = CompareConfig(models=["bav2"], data="synthetic:64", seeds=[0], output=str(out), speed=False)
    with RunLock(cell):  # a comparison of another process (before this version) training the cell
        before = _tree(out)
        with pytest.raises(UserError, match="in use by another run"):
            run_compare(cfg)
        assert _tree(out) == before


def test_a_lock_on_a_lock_file_removed_meanwhile_is_not_kept(tmp_path, monkeypatch):
    from bridgeattn.engine import runlock

    real, removed = runlock.fcntl.flock, []

    def flock(fd: int, operation: int) -> None:  # a refused run removes the file between our open and our lock
        real(fd, operation)
        if not removed:
            removed.append(fd)
            (tmp_path / "run" / ".lock").unlink()

    monkeypatch.setattr(runlock.fcntl, "flock", flock)
    with RunLock(tmp_path / "run") as lock:
        assert removed and os.path.samestat(os.fstat(lock.fd), os.stat(tmp_path / "run" / ".lock"))
