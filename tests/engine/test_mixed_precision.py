"""The one mixed-precision policy: bf16 autocast on a CPU only where the CPU has native bf16."""
from __future__ import annotations

import logging

import pytest
import torch

import bridgeattn
from bridgeattn.config import load_yaml, make_config, resolve_config_path
from bridgeattn.engine import hardware
from bridgeattn.tools.demo import run_demo

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """Set what the CPU reports: ``native_bf16(True)`` for an AVX512-BF16/AMX CPU, ``(False)`` for AVX2 only."""
    monkeypatch.delenv(hardware.NO_NATIVE_BF16_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    def set_native(value: bool) -> None:
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            monkeypatch.setattr(torch.cpu, name, lambda: value, raising=False)

    return set_native


@pytest.mark.parametrize("recipe", ["cpu_demo", "cpu_demo_full"])
def test_demo_recipes_use_bf16_only_on_cpus_with_native_bf16(recipe, native_bf16, monkeypatch):
    cfg = make_config(load_yaml(resolve_config_path(recipe)))
    native_bf16(True)
    assert hardware.amp_dtype_for(cfg.run.amp, CPU, cfg.run.amp_dtype) == torch.bfloat16
    native_bf16(False)
    assert hardware.amp_dtype_for(cfg.run.amp, CPU, cfg.run.amp_dtype) is None
    # the switches that emulate a CPU without native bf16 on one that has it
    native_bf16(True)
    monkeypatch.setenv(hardware.NO_NATIVE_BF16_ENV, "1")
    assert hardware.amp_dtype_for(cfg.run.amp, CPU, cfg.run.amp_dtype) is None
    monkeypatch.setenv(hardware.NO_NATIVE_BF16_ENV, "0")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.amp_dtype_for(cfg.run.amp, CPU, cfg.run.amp_dtype) is None


@pytest.fixture
def autocast_calls(monkeypatch) -> list:
    """The dtypes of every ``torch.autocast`` entered from now on."""
    calls = []
    real_autocast = torch.autocast

    def recording_autocast(*args, **kwargs):
        calls.append(kwargs.get("dtype"))
        return real_autocast(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", recording_autocast)
    return calls


TINY_DEMO = dict(data="synthetic:64", train_subset=64, val_subset=16, img_size=16, batch_size=32, epochs=1,
                 plots=False)


@pytest.mark.parametrize("probe", [True, False], ids=["probed", "recipe"])
def test_demo_never_autocasts_to_bf16_without_native_bf16(probe, native_bf16, autocast_calls, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bridgeattn")
    native_bf16(False)
    result = run_demo("cpu_demo", models=["plain_resnet20"], output=str(tmp_path / "demo"), overrides=TINY_DEMO,
                      progress=False, probe=probe)
    assert torch.bfloat16 not in autocast_calls  # neither in the probe nor in training or evaluation
    assert "float32 (--amp" in caplog.text and "bfloat16 autocast" not in caplog.text
    if probe:
        assert result["numerics"]["amp"] is False and "bf16" not in result["numerics"]["reason"]
        assert (tmp_path / "demo" / "numerics.json").is_file()


def test_demo_recipe_autocasts_where_bf16_is_native(native_bf16, autocast_calls, tmp_path, caplog):
    # the recorder sees bf16 when it is used: the test above can fail
    caplog.set_level(logging.INFO, logger="bridgeattn")
    native_bf16(True)
    run_demo("cpu_demo", models=["plain_resnet20"], output=str(tmp_path / "demo"), overrides=TINY_DEMO,
             progress=False, probe=False)
    assert torch.bfloat16 in autocast_calls
    assert "bfloat16 autocast (CPU has native bf16)" in caplog.text


def test_probe_times_bf16_only_with_native_bf16_and_leaves_the_threads(native_bf16, autocast_calls):
    model = bridgeattn.create_model("plain_resnet20", num_classes=10, in_chans=1)
    images, labels = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        native_bf16(False)
        choice, reason = hardware.probe_cpu_numerics(model, images, labels, try_bf16=True, rounds=1)
        # float32 x (NCHW, channels_last) x (2 threads, 1 thread)
        assert choice["amp"] is False and reason.count("fp32") == 4 and "bf16" not in reason
        assert torch.bfloat16 not in autocast_calls
        assert torch.get_num_threads() == 2
        native_bf16(True)
        choice, reason = hardware.probe_cpu_numerics(model, images, labels, try_bf16=True, rounds=1)
        assert reason.count("bf16") == 4 and torch.bfloat16 in autocast_calls
        assert set(choice) == {"amp", "channels_last", "threads"} and choice["threads"] in (1, 2)
        choice, reason = hardware.probe_cpu_numerics(model, images, labels, try_bf16=False, rounds=1)
        assert "bf16" not in reason  # a recipe without amp never gets bf16
    finally:
        torch.set_num_threads(threads)


def test_explicit_requests_are_honoured_or_refused():
    assert hardware.amp_dtype_for(False, CPU, "bfloat16") is None
    assert hardware.amp_dtype_for(True, CPU, "bfloat16") == torch.bfloat16
    assert hardware.amp_dtype_for(True, torch.device("cuda"), "auto") == torch.float16
    with pytest.raises(Exception, match="float16 needs CUDA"):
        hardware.amp_dtype_for(True, CPU, "float16")
