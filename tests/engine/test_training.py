"""The training engine in-process: a tiny run learns, resume is bit-exact, bad checkpoints and NaNs are handled."""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import signal
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from torch.utils.data import TensorDataset

from bridgeattn.config import OptimConfig, add_train_arguments, config_from_args, from_flat
from bridgeattn.engine import TrainingStopped, find_resume, load_checkpoint, train
from bridgeattn.engine.interrupt import TrainingInterrupted
from bridgeattn.errors import UserError
from bridgeattn.tools.score import evaluate_checkpoint

engine_train = importlib.import_module("bridgeattn.engine.train")

# bav2_resnet20 on 16-px synthetic images: 128 train samples = 4 steps of 32 per epoch, 32 val samples
TINY = dict(model="bav2_resnet20", data="synthetic:128", img_size=16, batch_size=32, lr=3e-3, epochs=2, workers=0,
            warmup_epochs=0.5, progress=False, plots=False, deterministic=True)
# the reference run exercises every piece of state a resume must restore
FULL_STATE = dict(TINY, mixup=0.2, cutmix=1.0, smoothing=0.1, ema=True, ema_decay=0.9, clip_grad=5.0, keep=1)


def _weights(path: Path, key: str = "model") -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[key]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted 2-epoch run with Mixup/CutMix, smoothing, EMA, clipping; epoch 1 and 2 checkpoints kept."""
    folder = tmp_path_factory.mktemp("engine") / "reference"
    summary = train(*from_flat(dict(output=str(folder), **FULL_STATE)))
    return folder, summary


def test_tiny_run_lowers_the_loss_and_writes_the_run_folder(tmp_path):
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), **dict(TINY, epochs=3, plots=True))))
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert summary["loss"] < math.log(10) and summary["top1"] > 30  # chance: 10 % and ln(10) = 2.30
    assert summary["status"] == "finished" and summary["epochs"] == 3 and summary["steps"] == 12
    for key in ("top1", "top5", "loss", "best_top1", "train_time_s", "train_img_per_s", "params", "output"):
        assert summary[key] is not None
    for name in ("config.yaml", "metrics.csv", "summary.json", "curves.png", "confusion.png", "per_class.csv"):
        assert (tmp_path / "run" / name).is_file(), name
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"] == "bav2_resnet20"
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert len(json.loads((tmp_path / "run" / "summary.json").read_text())["per_class_top1"]) == 10
    # the learning rate follows warm-up then cosine, per iteration
    lrs = [r["lr"] for r in history]
    assert lrs[0] > lrs[1] > lrs[2] and lrs[2] == pytest.approx(OptimConfig.min_lr, rel=1e-6)


def test_stopped_after_epoch_1_and_resumed_equals_uninterrupted(reference, tmp_path, monkeypatch):
    ref_folder, ref_summary = reference
    real_epoch = engine_train.train_one_epoch

    def interrupted(run, epoch, partial=None):
        if epoch == 1:
            raise KeyboardInterrupt  # the user pressed Ctrl-C twice during epoch 2
        return real_epoch(run, epoch, partial)

    monkeypatch.setattr(engine_train, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(*from_flat(dict(output=str(tmp_path / "run"), **FULL_STATE)))
    monkeypatch.setattr(engine_train, "train_one_epoch", real_epoch)
    assert find_resume(tmp_path / "run").name == "epoch-0001.pth"
    stopped = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["checkpoint"].endswith("epoch-0001.pth")
    assert stopped["resume_command"] == f"bridgeattn train --output {tmp_path / 'run'} --resume auto"
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), resume="auto", **FULL_STATE)))
    last = Path("checkpoints/last.pth")
    _assert_same(_weights(ref_folder / last), _weights(tmp_path / "run" / last))
    _assert_same(_weights(ref_folder / last, "ema"), _weights(tmp_path / "run" / last, "ema"))
    ref_state, state = load_checkpoint(ref_folder / last), load_checkpoint(tmp_path / "run" / last)
    assert state["step"] == ref_state["step"] == 8
    assert state["optimizer"]["param_groups"][0]["lr"] == ref_state["optimizer"]["param_groups"][0]["lr"]
    assert summary["top1"] == ref_summary["top1"] and summary["loss"] == ref_summary["loss"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_truncated_checkpoint_is_skipped_with_a_warning(reference, tmp_path):
    ref_folder, _ = reference
    folder = tmp_path / "run"
    shutil.copytree(ref_folder, folder, symlinks=True)
    newest = folder / "checkpoints" / "epoch-0002.pth"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a copy cut off half-way
    with pytest.warns(UserWarning, match="epoch-0002.pth.*truncated"):
        assert find_resume(folder).name == "epoch-0001.pth"
    with pytest.raises(UserError, match="truncated"):
        load_checkpoint(newest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(*from_flat(dict(output=str(folder), resume="auto", **FULL_STATE)))  # redoes epoch 2 from epoch 1
    _assert_same(_weights(ref_folder / "checkpoints/last.pth"), _weights(folder / "checkpoints/epoch-0002.pth"))
    assert find_resume(folder).name == "epoch-0002.pth"


def test_eval_reproduces_the_stored_accuracy(reference, tmp_path):
    ref_folder, ref_summary = reference
    result = evaluate_checkpoint(str(ref_folder), output=str(tmp_path / "eval"), plots=False)
    assert result["top1"] == result["stored_top1"] == ref_summary["top1"]
    assert result["loss"] == pytest.approx(ref_summary["loss"], rel=1e-12)
    assert result["count"] == 32 and (tmp_path / "eval" / "per_class.csv").is_file()
    ema = evaluate_checkpoint(str(ref_folder / "checkpoints" / "last.pth"), use_ema=True, output=str(tmp_path / "e"),
                              plots=False)
    assert ema["top1"] == ema["stored_top1"] == ref_summary["ema_top1"]


def _nan_at(monkeypatch, bad_steps: set[int]) -> None:
    """Make the model's output NaN on the given training forward passes (1-based)."""
    real_build = engine_train._build_model

    def build(*args, **kwargs):
        model, report = real_build(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, args, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] in bad_steps:
                    return output * float("nan")
            return output

        model.register_forward_hook(hook)
        return model, report

    monkeypatch.setattr(engine_train, "_build_model", build)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {6})
    with pytest.raises(TrainingStopped, match=r"non-finite loss \(nan\) at step 6 \(epoch 2, batch 2/4\)") as info:
        train(*from_flat(dict(output=str(tmp_path / "run"), **TINY)))
    assert "epoch-0001.pth" in str(info.value)
    assert find_resume(tmp_path / "run").name == "epoch-0001.pth"  # the good checkpoint is intact
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "stopped" and "step 6" in summary["message"]


def test_skip_nonfinite_skips_bad_steps_and_keeps_statistics_finite(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2, 6})
    summary = train(*from_flat(dict(output=str(tmp_path / "run"), skip_nonfinite=2, **TINY)))
    assert summary["status"] == "finished" and summary["skipped_steps"] == 2
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pth")
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert math.isfinite(summary["loss"])
    _nan_at(monkeypatch, {2, 5, 6})
    with pytest.raises(TrainingStopped, match="step 6.*more than --skip-nonfinite 2"):
        train(*from_flat(dict(output=str(tmp_path / "run2"), skip_nonfinite=2, **TINY)))


def test_occupied_output_folder_is_refused(reference):
    ref_folder, _ = reference
    with pytest.raises(UserError, match="already holds a run.*--resume auto"):
        train(*from_flat(dict(output=str(ref_folder), **TINY)))


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(argv)


def test_config_file_then_flags_and_booleans_both_ways(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: plain_resnet20\nepochs: 7\nlr: 1.0e-2\nema: true\namp: true\nopt_betas: [0.8, 0.9]\n")
    cfg, _ = config_from_args(_parse(["--config", str(recipe), "--epochs", "3", "--no-ema", "--model-kwargs",
                                      "drop_rate=0.1"]))
    o = cfg.optim
    assert (cfg.model.name, o.epochs, o.lr, o.ema, cfg.run.amp) == ("plain_resnet20", 3, 0.01, False, True)
    assert o.opt_betas == [0.8, 0.9] and cfg.model.kwargs == {"drop_rate": 0.1}
    assert config_from_args(_parse(["--ema", "--no-amp"]))[0].optim.ema is True
    builtin, _ = config_from_args(_parse(["--config", "imagenet_bav2"]))
    o = builtin.optim
    assert (o.lr, o.weight_decay, o.warmup_epochs, o.clip_grad) == (1e-3, 0.05, 20, 5.0)
    assert (o.mixup, o.cutmix, o.smoothing, builtin.data.reprob) == (0.8, 1.0, 0.1, 0.25)
    for name in ("cpu_demo", "imagenet_bav1"):
        config_from_args(_parse(["--config", name]))


@pytest.mark.parametrize("argv, message", [
    (["--warmup-epochs", "5", "--epochs", "3"], "must be smaller than --epochs"),
    (["--sync-bn", "--device", "cpu"], "--sync-bn needs CUDA"),
    (["--mixup", "0.8", "--batch-size", "31"], "must be even"),
    (["--resume", "/nonexistent/ckpt.pth"], "no such checkpoint"),
    (["--config", "no_such_recipe"], "no such file or built-in recipe"),
    (["--clip-grad", "-1"], r"--clip-grad must be a positive gradient norm \(or none: off\), got -1.0"),
    (["--ema-decay", "5"], r"--ema-decay must be in \[0, 1\), got 5.0"),
])
def test_contradictory_or_bad_options_raise_user_error(argv, message):
    with pytest.raises(UserError, match=message):
        config_from_args(_parse(argv))


def test_launcher_options_are_checked_by_the_launcher(capsys, monkeypatch):
    from bridgeattn.cli.main import main

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert main(["train", "--max-restarts", "2", "--epochs", "1"]) == 2
    assert "use it with --nproc" in capsys.readouterr().err
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--nproc", "2", "--epochs", "1"]) == 2
    assert "under torchrun leave --nproc out" in capsys.readouterr().err


def test_unknown_yaml_option_is_named(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("epoch: 3\n")
    with pytest.raises(UserError, match="unknown training option 'epoch'; did you mean epochs"):
        config_from_args(_parse(["--config", str(recipe)]))


@pytest.fixture
def signal_at(monkeypatch):
    """``signal_at(step, sig)``: the process gets ``sig`` right after optimizer step ``step``, as from a scheduler."""
    loop = importlib.import_module("bridgeattn.engine.loop")
    real = loop.optimizer_step

    def arm(step: int, sig: signal.Signals) -> None:
        def optimizer_step(run, params):
            found = real(run, params)
            if run.step == step:
                os.kill(os.getpid(), sig)  # arrives in the middle of the step loop
            return found
        monkeypatch.setattr(loop, "optimizer_step", optimizer_step)
    return arm


def test_sigterm_mid_epoch_then_resume_auto_equals_uninterrupted(reference, tmp_path, signal_at):
    ref_folder, ref_summary = reference
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        signal_at(6, signal.SIGTERM)
        train(*from_flat(dict(output=str(run), **FULL_STATE)))
    assert info.value.exit_code == 143 and info.value.signal_name == "SIGTERM"
    # the step in progress was finished, then the exact position written: 2 of epoch 2's 4 batches done
    assert find_resume(run).name == "epoch-0001-batch-000002.pth"
    state = load_checkpoint(find_resume(run))
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGTERM" and summary["steps"] == 6
    assert summary["resume_command"] == f"bridgeattn train --output {run} --resume auto"
    assert summary["resume_command"] in str(info.value) and "step 6 (epoch 2, batch 2/4)" in str(info.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back

    resumed = train(*from_flat(dict(output=str(run), resume="auto", **FULL_STATE)))
    last = Path("checkpoints/last.pth")
    _assert_same(_weights(ref_folder / last), _weights(run / last))
    _assert_same(_weights(ref_folder / last, "ema"), _weights(run / last, "ema"))
    assert resumed["top1"] == ref_summary["top1"] and resumed["loss"] == ref_summary["loss"]
    ref_hist, hist = ((f / "metrics.jsonl").read_text().splitlines() for f in (ref_folder, run))
    for a, b in zip(map(json.loads, ref_hist), map(json.loads, hist), strict=True):
        assert (a["train_loss"], a["train_samples"], a["lr"]) == (b["train_loss"], b["train_samples"], b["lr"])
    assert resumed["status"] == "finished" and "resume_command" not in resumed


@pytest.mark.parametrize("sig, code", [(signal.SIGUSR1, 143), (signal.SIGINT, 130)])
def test_sigusr1_and_ctrl_c_also_checkpoint_and_say_how_to_continue(tmp_path, sig, code, signal_at):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        signal_at(3, sig)
        train(*from_flat(dict(output=str(run), **TINY)))
    assert info.value.exit_code == code
    assert find_resume(run).name == "epoch-0000-batch-000003.pth"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == sig.name
    assert summary["checkpoint"] == str(find_resume(run))


class TinyNet(nn.Module):
    """A user's own model: no timm, no registry."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _tensor_sets() -> tuple[TensorDataset, TensorDataset]:
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(96) % 5
    images = torch.randn(96, 3, 12, 12, generator=gen) + labels.view(-1, 1, 1, 1) * 0.5
    return TensorDataset(images[:64], labels[:64]), TensorDataset(images[64:], labels[64:])


def test_train_takes_a_users_module_and_datasets_and_resumes_exactly(tmp_path, signal_at):
    custom = dict(batch_size=16, epochs=2, lr=1e-2, workers=0, progress=False, plots=False, deterministic=True)

    def fresh() -> nn.Module:
        torch.manual_seed(7)
        return TinyNet()

    whole = train(*from_flat(dict(output=str(tmp_path / "whole"), **custom)), model=fresh(), datasets=_tensor_sets())
    assert whole["status"] == "finished" and whole["steps"] == 8 and whole["num_classes"] == 5
    assert whole["model"].endswith("TinyNet") and whole["data"] == "custom"
    assert (tmp_path / "whole" / "metrics.jsonl").read_text().count("\n") == 2
    stored = _weights(tmp_path / "whole" / "checkpoints/last.pth", "preprocessing")  # the caller's tensors as given
    assert stored["input_size"] == [3, 12, 12] and stored["mean"] == [] and stored["std"] == []

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as info:
        signal_at(5, signal.SIGTERM)
        train(*from_flat(dict(output=str(run), **custom)), model=fresh(), datasets=_tensor_sets())
    assert "resume='auto'" in info.value.resume_command
    again = train(*from_flat(dict(output=str(run), resume="auto", **custom)), model=fresh(), datasets=_tensor_sets())
    _assert_same(_weights(tmp_path / "whole" / "checkpoints/last.pth"), _weights(run / "checkpoints/last.pth"))
    assert again["loss"] == whole["loss"] and again["top1"] == whole["top1"]
    with pytest.raises(UserError, match="is for model class .*TinyNet"):
        other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 5))
        train(*from_flat(dict(output=str(run), resume="auto", **dict(custom, epochs=3))), model=other,
              datasets=_tensor_sets())
