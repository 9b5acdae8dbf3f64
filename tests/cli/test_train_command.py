"""The train/eval commands as a user runs them: errors in-process, SIGKILL and resume, torchrun DDP and restarts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bridgeattn.config import from_flat
from bridgeattn.engine import find_resume, load_checkpoint, train

# tests/faults/sitecustomize.py injects faults into the subprocesses: ACTION@STEP[:RANK]
FAULT_ENV = "BRIDGEATTN_TEST_FAULT"
FAULTS_DIR = Path(__file__).resolve().parents[1] / "faults"

# bav2_resnet20 on 16-px synthetic images; 4 optimizer steps per epoch at a global batch of 32
TINY_FLAGS = ["--model", "bav2_resnet20", "--data", "synthetic:128", "--img-size", "16", "--batch-size", "32",
              "--lr", "3e-3", "--epochs", "2", "--warmup-epochs", "0.5", "--workers", "0", "--no-progress",
              "--no-plots", "--deterministic"]
# 2 processes x 16 = the same global batch of 32; 37 val samples do not split evenly over 2 ranks
DDP_FLAGS = ["--data", "synthetic:160", "--train-subset", "128", "--val-subset", "37", "--batch-size", "16",
             "--nproc", "2"]
TINY = dict(model="bav2_resnet20", data="synthetic:128", img_size=16, batch_size=32, lr=3e-3, epochs=2, workers=0,
            warmup_epochs=0.5, progress=False, plots=False, deterministic=True)


def _env(**extra: str) -> dict[str, str]:
    # same intra-op thread count as this process, so CPU results are bit-comparable with in-process runs
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONWARNINGS="ignore")
    env.pop(FAULT_ENV, None)
    env.update(extra)
    if FAULT_ENV in env:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(FAULTS_DIR), env.get("PYTHONPATH")) if p)
    return env


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bridgeattn", *args]
    # own process group: on a timeout the torchrun workers go too, not only the launcher
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or _env(),
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"bridgeattn {' '.join(args[:3])} ... timed out after {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)




def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "abc"], "invalid int value"),
    (["train", "--data", "synthetic", "--warmup-epochs", "4", "--epochs", "2"], "must be smaller than --epochs"),
    (["train", "--model", "bav2_resnet21", "--data", "synthetic"], "unknown model 'bav2_resnet21'"),
    (["train", "--data", "folder:/nonexistent/imagenet", "--epochs", "1"], "/nonexistent/imagenet"),
    (["train", "--data", "mnist-9000"], "unknown dataset spec"),
    (["eval", "--checkpoint", "/nonexistent/last.pth"], "/nonexistent/last.pth"),
])
def test_cli_errors_are_one_clear_line(args, message, tmp_path, run_cli):
    if args[0] == "train":
        args = [*args, "--output", str(tmp_path / "run")]
    status, err = run_cli(args)
    assert status == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "error" in err and message in err, err


def test_occupied_output_folder_is_refused_unless_resume(tmp_path, run_cli):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: plain_resnet20\n")
    status, err = run_cli(["train", *TINY_FLAGS, "--output", str(tmp_path / "run")])
    assert status == 2 and "Traceback" not in err
    assert "already holds a run; continue it with --resume auto" in err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "reference"
    train(*from_flat(dict(output=str(folder), **TINY)))
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_mid_epoch_then_resume_auto_matches_uninterrupted(uninterrupted, tmp_path):
    run = tmp_path / "run"
    # SIGKILL after optimizer step 6 of 8: in the middle of epoch 2, after the epoch-1 checkpoint
    killed = _cli("train", *TINY_FLAGS, "--output", str(run), env=_env(**{FAULT_ENV: "SIGKILL@6"}))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert find_resume(run).name == "epoch-0001.pth"  # at most the work since the last checkpoint is lost
    resumed = _cli("train", *TINY_FLAGS, "--output", str(run), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "epoch-0001.pth" in resumed.stdout
    assert _same_weights(uninterrupted / "checkpoints" / "last.pth", run / "checkpoints" / "last.pth")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2 and summary["steps"] == 8

    evaluated = _cli("eval", "--checkpoint", str(run), "--no-plots", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"top-1 {summary['top1']:.2f} %" in evaluated.stdout and "(reproduced)" in evaluated.stdout


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp") / "two-procs"
    result = _cli("train", *TINY_FLAGS, *DDP_FLAGS, "--output", str(folder), env=_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    (folder.parent / "stdout.txt").write_text(result.stdout)
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(ddp_run, tmp_path):
    single = train(*from_flat(dict(output=str(tmp_path / "one"), **dict(TINY, data="synthetic:160", train_subset=128,
                                                                     val_subset=37))))
    ddp = json.loads((ddp_run / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["global_batch"] == 32 and ddp["steps"] == single["steps"] == 8
    one_hist = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    ddp_hist = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    # the same samples in the same steps: every sample trained once per epoch, none padded or doubled
    assert [r["train_samples"] for r in ddp_hist] == [r["train_samples"] for r in one_hist] == [128, 128]
    assert [r["val_samples"] for r in ddp_hist] == [r["val_samples"] for r in one_hist] == [37, 37]
    # same lr schedule; BatchNorm sees 16 samples per rank instead of 32 (no SyncBN on CPU), so the losses are
    # close rather than identical
    assert [r["lr"] for r in ddp_hist] == pytest.approx([r["lr"] for r in one_hist], rel=1e-9)
    for a, b in zip(ddp_hist, one_hist):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.1)
    # the sharded, all-reduced evaluation counts each of the 37 samples exactly once: it equals a one-process
    # evaluation of the same weights, up to the rounding of other batch shapes (at most one boundary sample flips)
    from bridgeattn.tools.score import evaluate_checkpoint

    again = evaluate_checkpoint(str(ddp_run), output=str(tmp_path / "eval"), plots=False)
    assert again["count"] == 37
    assert again["top1"] == pytest.approx(ddp["top1"], abs=100 / 37 + 1e-9)
    assert again["loss"] == pytest.approx(ddp["loss"], rel=1e-4)


# Plain SGD (no momentum, no Adam normalisation): an update is lr * gradient, so a rounding difference in a gradient
# moves a weight by lr times that difference and never by a whole step. Adam-type optimizers divide by the gradient's
# running RMS, which turns rounding noise in near-zero gradients into lr-sized steps: their runs agree on one CPU only.
SGD_LR = 0.05
SGD_FLAGS = ["--opt", "momentum", "--momentum", "0", "--lr", str(SGD_LR)]
# Rounding differences between the two layouts (two all-reduced half-batch gradients vs one full-batch gradient) are
# bounded by a few float32 ulps of the per-sample gradient sums; 1e-4 is a generous absolute bound for gradients of
# order one. Each of the `steps` updates moves a weight by at most lr times that, so the weights may differ by
# lr * steps * 1e-4 (4e-5 here), plus as much again for the feedback of earlier differences through later gradients.
GRAD_ROUNDING = 1e-4


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_process_ddp_with_frozen_bn_equals_one_process(tmp_path):
    # With frozen BatchNorm nothing depends on how the global batch is split, so DDP's averaged gradients are
    # the one-process gradients: the runs agree up to float rounding, not only statistically.
    ddp_folder = tmp_path / "ddp"
    # no augmentation: each rank draws its own random crops, which a single process cannot reproduce
    result = _cli("train", *TINY_FLAGS, *DDP_FLAGS, *SGD_FLAGS, "--freeze-bn", "--recipe", "none",
                  "--output", str(ddp_folder), env=_env(OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    single = train(*from_flat(dict(output=str(tmp_path / "one"), freeze_bn=True, recipe="none",
                               **dict(TINY, data="synthetic:160", train_subset=128, val_subset=37, opt="momentum",
                                      momentum=0.0, lr=SGD_LR))))
    ddp = json.loads((ddp_folder / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["steps"] == single["steps"] == 8
    assert ddp["loss"] == pytest.approx(single["loss"], rel=1e-3)
    # a sample exactly on a decision boundary may flip: at most one of the 37
    assert ddp["top1"] == pytest.approx(single["top1"], abs=100 / 37 + 1e-9)
    wa = load_checkpoint(ddp_folder / "checkpoints" / "last.pth")["model"]
    wb = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pth")["model"]
    assert wa.keys() == wb.keys()
    atol = 2 * SGD_LR * single["steps"] * GRAD_ROUNDING
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=atol, msg=key)
    assert not any("num_batches_tracked" in k for k in wa)  # the model really was frozen
    # the tolerance is far below what training changed: the comparison can fail
    torch.manual_seed(42)
    from bridgeattn import create_model

    initial = create_model("bav2_resnet20", num_classes=10, in_chans=3).state_dict()
    moved = max((wb[k].float() - initial[k].float()).abs().max().item() for k in wb if k in initial)
    assert moved > 50 * atol


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_restarts_after_a_rank_is_killed_and_finishes(ddp_run, tmp_path):
    run = tmp_path / "elastic"
    # rank 1 dies with SIGKILL after step 6 (epoch 2) on the first attempt; torchrun restarts both ranks once.
    # One restart must suffice: each attempt rendezvouses under its own store prefix, so no restarted rank waits
    # for a dead peer (a regression would fail within the 45 s collective timeout, not hang).
    result = _cli("train", *TINY_FLAGS, *DDP_FLAGS, "--max-restarts", "1", "--output", str(run),
                  env=_env(OMP_NUM_THREADS="1", BRIDGEATTN_DIST_TIMEOUT_S="45", **{FAULT_ENV: "SIGKILL@6:1"}),
                  timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout and "epoch-0001.pth" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2 and summary["steps"] == 8
    assert _same_weights(ddp_run / "checkpoints" / "last.pth", run / "checkpoints" / "last.pth")


@pytest.mark.slow
def test_ddp_epoch_line_reports_the_global_img_per_s_once(ddp_run):
    printed = [float(line.split(" img/s")[0].split()[-1])
               for line in (ddp_run.parent / "stdout.txt").read_text().splitlines() if line.startswith("epoch ")]
    history = [json.loads(line) for line in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    # train_img_per_s is all ranks' samples over the epoch's time: the printed figure, not world size times it
    assert printed == [round(r["train_img_per_s"]) for r in history] and len(printed) == 2


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _paused_workers(proc: subprocess.Popen, markers: Path, timeout: float = 300) -> list[int]:
    """The worker pids, once both ranks wait at the step the fault helper pauses them at."""
    deadline = time.monotonic() + timeout
    while len(list(markers.glob("paused-*"))) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"workers never paused: {proc.communicate()[1][-3000:]}")
        time.sleep(0.1)
    time.sleep(0.2)  # the markers' contents are written
    return [int(p.read_text()) for p in sorted(markers.glob("paused-*"))]


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_to_the_launcher_checkpoints_every_rank_and_resume_matches_uninterrupted(ddp_run, tmp_path):
    run, markers = tmp_path / "run", tmp_path / "markers"
    markers.mkdir()
    env = _env(OMP_NUM_THREADS="1", BRIDGEATTN_TEST_MARKERS=str(markers), **{FAULT_ENV: "pause@6"})
    launcher = _start([sys.executable, "-m", "bridgeattn", "train", *TINY_FLAGS, *DDP_FLAGS, "--output", str(run)],
                      env)
    workers = _paused_workers(launcher, markers)
    launcher.send_signal(signal.SIGTERM)  # what a scheduler sends before preemption
    out, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 143, err[-3000:]
    assert not any(_alive(pid) for pid in workers)
    # both ranks finished step 6, agreed to stop one step later and wrote the exact position: 3 of 4 batches
    assert find_resume(run).name == "epoch-0001-batch-000003.pth"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 7 and summary["signal"] == "SIGTERM"
    assert summary["resume_command"] == f"bridgeattn train --output {run} --resume auto --nproc 2"
    assert "--resume auto --nproc 2" in err.strip().splitlines()[-1]

    resumed = _cli("train", *TINY_FLAGS, *DDP_FLAGS, "--output", str(run), "--resume", "auto",
                   env=_env(OMP_NUM_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "batch 3 of epoch 2" in resumed.stdout
    assert _same_weights(ddp_run / "checkpoints" / "last.pth", run / "checkpoints" / "last.pth")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_workers_die_with_a_killed_torchrun_and_write_nothing_more(tmp_path):
    run, markers = tmp_path / "run", tmp_path / "markers"
    markers.mkdir()
    env = _env(OMP_NUM_THREADS="1", BRIDGEATTN_TEST_MARKERS=str(markers), **{FAULT_ENV: "pause@2"})
    # plain torchrun, as on a cluster; `--nproc` starts torchrun with the same death signal
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "bridgeattn",
           "train", *TINY_FLAGS, *DDP_FLAGS[:-2], "--output", str(run)]
    proc = _start(cmd, env)
    workers = _paused_workers(proc, markers)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "orphaned workers still running"
    files = sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*"))
    time.sleep(1.0)
    assert sorted((str(p), p.stat().st_mtime_ns) for p in run.rglob("*")) == files


@pytest.mark.multiprocess
def test_ctrl_c_prints_how_to_continue_and_writes_the_summary(tmp_path):
    run = tmp_path / "run"
    result = _cli("train", *TINY_FLAGS, "--output", str(run), env=_env(**{FAULT_ENV: "SIGINT@3"}))
    assert result.returncode == 130, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "stopped by SIGINT after step 3" in last and "Traceback" not in result.stderr
    assert last.endswith(f"continue with: bridgeattn train --output {run} --resume auto")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["checkpoint"].endswith("epoch-0000-batch-000003.pth")
