"""Two torchrun "nodes" on localhost (c10d rendezvous, gloo, one process each) train like one process."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from bridgeattn.config import from_flat
from bridgeattn.engine import train

# 64 synthetic 16-px samples: 2 nodes x batch 8 and 1 process x batch 16 both take 4 steps per epoch
FLAGS = ["--model", "bav2_resnet20", "--img-size", "16", "--batch-size", "8", "--lr", "1e-3", "--epochs", "1",
         "--warmup-epochs", "0", "--no-progress", "--no-plots"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "shards"])
def test_two_nodes_on_localhost_take_the_steps_and_samples_of_one_process(tmp_path, streamed):
    port, folder = _free_port(), tmp_path / "two-nodes"
    data, workers = "synthetic:64", "0"
    if streamed:  # the same samples from tar shards, two loader workers per rank
        from bridgeattn.data import DataConfig
        from bridgeattn.data.shard_writer import write_shards

        write_shards(DataConfig(spec=data), tmp_path / "shards", shard_size=10)
        data, workers = f"wds:{tmp_path / 'shards'}", "2"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    nodes = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "two-nodes", "-m", "bridgeattn", "train", *FLAGS, "--data", data, "--workers", workers,
               "--output", str(folder)]
        nodes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                      start_new_session=True))
    outputs = []
    for proc in nodes:
        try:
            outputs.append(proc.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for p in nodes:
                os.killpg(p.pid, signal.SIGKILL)
            pytest.fail("the two-node run timed out")
    for proc, (_, err) in zip(nodes, outputs):
        assert proc.returncode == 0, err[-3000:]
    two = json.loads((folder / "summary.json").read_text())
    one = train(*from_flat(dict(model="bav2_resnet20", data="synthetic:64", img_size=16, batch_size=16, lr=1e-3,
                                epochs=1, warmup_epochs=0, workers=0, progress=False, plots=False,
                                output=str(tmp_path / "one"))))
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_batch"] == one["global_batch"] == 16
    assert two["steps"] == one["steps"] == 4
    rows = [json.loads((f / "metrics.jsonl").read_text().splitlines()[-1]) for f in (folder, tmp_path / "one")]
    assert rows[0]["train_samples"] == rows[1]["train_samples"] == 64
    assert rows[0]["val_samples"] == rows[1]["val_samples"] == 16
    assert torch.isfinite(torch.tensor(two["loss"]))


def _nan_on_rank_one(rank: int, port: int, folder: str) -> None:
    """One DDP rank (spawned): rank 1's 2nd training forward returns NaN; every rank must skip that same step."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import importlib

    engine_train = importlib.import_module("bridgeattn.engine.train")
    real_build = engine_train._build_model
    held = {}

    def build(*args, **kwargs):
        model, report = real_build(*args, **kwargs)
        held["model"] = model
        calls = {"n": 0}

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if rank == 1 and calls["n"] == 2:
                    return output * float("nan")
            return output

        model.register_forward_hook(hook)
        return model, report

    engine_train._build_model = build
    summary = engine_train.train(*from_flat(dict(
        model="bav2_resnet20", data="synthetic:64", img_size=16, batch_size=8, lr=1e-3, epochs=1, warmup_epochs=0,
        workers=0, progress=False, plots=False, skip_nonfinite=1, output=folder)))
    params = [p.detach().double() for p in held["model"].parameters()]
    with open(f"{folder}-rank{rank}.json", "w") as f:
        json.dump({"skipped_steps": summary["skipped_steps"], "status": summary["status"],
                   "finite": all(bool(torch.isfinite(p).all()) for p in params),
                   "checksum": sum(float((p * (i + 1)).sum()) for i, p in enumerate(params))}, f)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_nan_on_one_rank_is_skipped_by_every_rank_without_a_vote(tmp_path):
    torch.multiprocessing.spawn(_nan_on_rank_one, args=(_free_port(), str(tmp_path / "run")), nprocs=2)
    ranks = [json.loads((tmp_path / f"run-rank{r}.json").read_text()) for r in range(2)]
    assert [r["skipped_steps"] for r in ranks] == [1, 1]  # rank 0's own loss was finite, it skipped all the same
    assert all(r["status"] == "finished" and r["finite"] for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # the ranks' weights never diverged
