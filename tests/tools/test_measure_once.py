"""One timing loop, one FLOP-counting pass, one folder scan per comparison; compare's output and seed checks."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bridgeattn
from bridgeattn.data import DataConfig, build_datasets
from bridgeattn.errors import UserError
from bridgeattn.tools.compare import CompareConfig, measure_inference, run_compare
from bridgeattn.tools.profile import profile_model

benchmark_module = importlib.import_module("bridgeattn.tools.benchmark")
folder_module = importlib.import_module("bridgeattn.data.folder")
profile_module = importlib.import_module("bridgeattn.tools.profile")


def test_profile_counts_flops_in_one_pass(monkeypatch):
    passes = []
    real = profile_module.count_flops
    monkeypatch.setattr(profile_module, "count_flops", lambda *a, **k: passes.append(1) or real(*a, **k))
    report = profile_model("bav2_resnet20", img_size=16, batch_size=2)
    assert len(passes) == 1
    assert report["macs"] == sum(s["macs"] for s in report["stages"]) > 0


def test_benchmark_and_the_cpu_probe_time_one_step_that_leaves_the_weights(monkeypatch):
    from bridgeattn.engine import hardware

    made = []
    real = hardware.step_function

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(hardware, "step_function", counting)
    monkeypatch.setattr(benchmark_module, "step_function", counting)
    report = benchmark_module.benchmark(["plain_resnet20"], batch_size=2, img_size=16, train=True, repeats=1, warmup=1)
    model = bridgeattn.create_model("plain_resnet20", num_classes=10, in_chans=1)
    hardware.probe_cpu_numerics(model, torch.randn(2, 1, 16, 16), torch.randint(0, 10, (2,)), try_bf16=False, rounds=1)
    assert len(made) == 3 and report["results"][0]["step_ms"] > 0  # one benchmarked model, the probe's two layouts
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    real(model.eval(), torch.randn(2, 1, 16, 16), torch.randint(0, 10, (2,)), None)()  # eval: BN statistics kept
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # learning rate 0
    assert all(p.grad is None for p in model.parameters())


def test_input_checks_and_model_listing_count_with_the_one_meta_counter(monkeypatch):
    from bridgeattn.models import cost
    from bridgeattn.models.checks import check_model_input

    devices = []
    real = cost.count_flops
    monkeypatch.setattr(cost, "count_flops",
                        lambda m, *a, **k: devices.append(next(m.parameters()).device.type) or real(m, *a, **k))
    check_model_input("bav2_resnet20", 16, in_chans=1)
    row = profile_module.model_cost("bav2_resnet20")
    assert devices == ["meta", "meta"] and row["input_size"] == [3, 32, 32] and row["macs"] > 0


def test_compare_times_inference_with_the_benchmark_loop(monkeypatch):
    calls = []
    real = benchmark_module.benchmark
    monkeypatch.setattr(benchmark_module, "benchmark", lambda *a, **k: calls.append(k) or real(*a, **k))
    speeds = measure_inference(["plain_resnet20", "bav2_resnet20"], 10, 3, 16, batch=2, reps=1)
    assert len(calls) == 1 and calls[0]["repeats"] == 1 and calls[0]["batch_size"] == 2
    assert set(speeds) == {"plain_resnet20", "bav2_resnet20"} and min(speeds.values()) > 0


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_a_folder_is_scanned_once_until_its_files_change(tmp_path, monkeypatch):
    root = _folder(tmp_path / "imgs")
    checked = []
    real = folder_module.check_image
    monkeypatch.setattr(folder_module, "check_image", lambda p: checked.append(p) or real(p))
    cfg = DataConfig(spec=f"folder:{root}", img_size=8)
    for _ in range(3):  # e.g. three compare cells
        train_set, val_set, _ = build_datasets(cfg)
    assert len(checked) == 8 and len(train_set) == len(val_set) == 4
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "train" / "a" / "new.png")
    train_set, _, _ = build_datasets(cfg)
    assert len(train_set) == 5 and len(checked) == 8 + 5  # only the changed split is checked again


def _engine(options):
    top1 = 50.0 + options["seed"] + (1.0 if options["model"].startswith("bav2") else 0.0)
    return {"top1": top1, "top5": 90.0, "loss": 1.0, "train_img_per_s": 10.0, "train_time_s": 1.0}


@pytest.fixture
def stand_in_engine(monkeypatch) -> None:
    """Compare cells get ``_engine``'s summary, and the data's shape (16 px) without building the data set."""
    compare = importlib.import_module("bridgeattn.tools.compare")
    monkeypatch.setattr(compare, "_train", _engine)
    monkeypatch.setattr(compare, "_data_shape", lambda cfg: (10, 3, 16))


def _compare(output: Path, seeds: list[int], speed: bool) -> dict:
    cfg = CompareConfig(models=["plain", "bav2"], data="synthetic:64", seeds=seeds, output=str(output),
                        train_options={"epochs": 1}, speed=speed, speed_batch=2, speed_reps=1)
    return run_compare(cfg)


def test_compare_refuses_repeated_seeds_and_a_training_run_folder(tmp_path, stand_in_engine):
    with pytest.raises(UserError, match="seed.*0.*twice"):
        _compare(tmp_path / "cmp", [0, 0], speed=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: bav2_resnet20\n")
    with pytest.raises(UserError, match="holds a training run"):
        _compare(run, [0, 1], speed=False)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]  # nothing written into it


def test_a_rerun_without_speed_keeps_the_measured_inference_figures(tmp_path, stand_in_engine):
    measured = {r["name"]: r["infer_img_per_s"] for r in _compare(tmp_path, [0, 1], speed=True)["models"]}
    assert all(v > 0 for v in measured.values())
    again = {r["name"]: r["infer_img_per_s"] for r in _compare(tmp_path, [0, 1], speed=False)["models"]}
    assert again == measured
    stored = json.loads((tmp_path / "results.json").read_text())["models"]
    assert {r["name"]: r["infer_img_per_s"] for r in stored} == measured
    fresh = _compare(tmp_path / "other", [0, 1], speed=False)["models"]
    assert all(r.get("infer_img_per_s") is None for r in fresh)  # never measured: n/a, not invented
