"""Distributed training under torchrun: one process per device, gloo on CPU / nccl on CUDA, exact reductions.
Without torchrun's RANK, WORLD_SIZE and LOCAL_RANK the run is one process and every helper here is a no-op."""
from __future__ import annotations

import ctypes
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..errors import UserError

PR_SET_PDEATHSIG = 1  # prctl option from <linux/prctl.h>: a signal for this process when its parent dies
_control_group: Any = None  # set by setup()


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def restart_count() -> int:
    """How often torchrun restarted this job (``--max-restarts``); 0 outside torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux only), so a worker whose launcher was killed
    does not train on into a run folder whose lock has gone."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        requested = ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        requested = False
    if requested and os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device."""
    if "LOCAL_RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # not launched by torchrun
        return DistInfo(device=resolve_device(device))
    rank, world, local = (int(os.environ.get(name, "0")) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if world > 1 and not os.environ.get(name)]
    if missing:
        raise UserError(f"WORLD_SIZE={world} asks for {world} processes but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set: launch with torchrun (or bridgeattn "
                        "train --nproc N), or unset WORLD_SIZE, RANK and LOCAL_RANK for one process")
    die_with_parent()
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        # a rank that waits longer for the others fails, so that torchrun's --max-restarts restarts the job
        timeout = timedelta(seconds=float(os.environ.get("BRIDGEATTN_DIST_TIMEOUT_S", "1800")))
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=not agent_store and rank == 0, timeout=timeout)
        # prefixed by the attempt: after an elastic restart the store still holds the killed processes' addresses
        store = dist.PrefixStore(f"bridgeattn/attempt-{restart_count()}", store)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                                device_id=dev if dev.type == "cuda" else None, timeout=timeout)
        global _control_group
        # a CPU group for small votes (stop requests), so they never wait on the device
        _control_group = dist.new_group(backend="gloo", timeout=timeout) if dev.type == "cuda" else None
    return DistInfo(rank, world, dev)


def cleanup() -> None:
    global _control_group
    _control_group = None
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (a no-op in one process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class StopVote:
    """Ranks agree to stop at the same optimizer step when any of them was asked to, without a host wait: each
    ``poll(wanted)`` (once per step on every rank) starts an asynchronous all-reduce of the wish and reads the one
    the previous call started, so every rank gets the same answer one step after the request."""

    def __init__(self) -> None:
        self.buffer = torch.zeros(1)
        self.work: Any = None

    def poll(self, wanted: bool) -> bool:
        if not active():
            return wanted
        self.close()
        decided = self.buffer.item() > 0  # the vote the previous call started (none before the first)
        if not decided:
            self.buffer.fill_(float(wanted))
            self.work = dist.all_reduce(self.buffer, group=_control_group, async_op=True)
        return decided

    def close(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (``start``: this rank's samples already consumed),
    so a run resumed mid-epoch gets exactly the remaining batches of the interrupted epoch. With ``keyed`` it
    yields ``(epoch, index)``, so that persistent workers know the epoch of each sample."""

    def __init__(self, *args: Any, keyed: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keyed, self.start = keyed, 0

    def __iter__(self) -> Iterator[Any]:
        indices = itertools.islice(super().__iter__(), self.start, None)
        return zip(itertools.repeat(self.epoch), indices) if self.keyed else indices

    def __len__(self) -> int:
        return super().__len__() - self.start


def launch_torchrun(config_path: str, nproc: int, max_restarts: int = 0, *, env: dict[str, str] | None = None,
                    train_args: list[str] | None = None) -> int:
    """Run ``bridgeattn train --config CONFIG_PATH *TRAIN_ARGS`` in ``nproc`` processes on this machine under
    torchrun (``env``: the workers'); its status, 128 + the signal number after a signal. SIGTERM, SIGUSR1 and
    Ctrl-C are passed on once (the workers checkpoint and stop); a second one kills torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
           "-m", "bridgeattn", "train", "--config", config_path, *(train_args or [])]
    env = {**os.environ, **(env or {})}
    # one process per core share: keep each process's intra-op threads from oversubscribing the machine
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    received: list[int] = []
    # own session: a Ctrl-C in the terminal reaches torchrun once, through us, not twice
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        proc.send_signal(signum if len(received) == 1 else signal.SIGKILL)

    passed_on = ("SIGTERM", "SIGUSR1", "SIGINT", "SIGHUP")
    previous = {sig: signal.signal(sig, forward) for sig in signal.Signals if sig.name in passed_on}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if received:
        return 128 + (signal.SIGINT if received[0] == signal.SIGINT else signal.SIGTERM)
    return code
