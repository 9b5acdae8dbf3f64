"""Fine-tuning runs: ``--init-from`` plain weights (file or run folder) and a separate gate learning rate."""
from __future__ import annotations

import argparse

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

import bridgeattn
from bridgeattn.config import add_train_arguments, config_from_args, from_flat
from bridgeattn.engine import load_checkpoint, train
from bridgeattn.engine.finetune import gate_parameter_names, init_from, optimizer_params
from bridgeattn.errors import UserError
from bridgeattn.weights.checkpoint import find_resume, run_checkpoint

TINY = dict(data="synthetic:64", img_size=16, batch_size=32, lr=3e-3, epochs=1, workers=0, progress=False,
            plots=False, deterministic=True)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plain") / "run"
    train(*from_flat(dict(model="plain_resnet20", output=str(folder), **TINY)))
    return folder


def test_init_from_a_run_folder_starts_at_the_plain_function(plain_run):
    state = load_checkpoint(run_checkpoint(plain_run))
    plain = timm.create_model("plain_resnet20", num_classes=state["num_classes"], in_chans=state["in_chans"])
    plain.load_state_dict(state["model"])
    model = bridgeattn.create_model("bav2_resnet20", num_classes=state["num_classes"], in_chans=state["in_chans"])
    init_from(model, str(plain_run))
    x = torch.randn(4, state["in_chans"], 16, 16)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=1e-5, atol=1e-5)


def test_gate_groups_get_their_own_learning_rate_through_the_schedule():
    model = bridgeattn.create_model("bav2_resnet20")
    gates = gate_parameter_names(model)
    assert gates and all(".ba." in n for n in gates)
    params = optimizer_params(model, lr=1e-3, weight_decay=0.05, filter_bias_and_bn=True, gate_lr_scale=10.0)
    opt = create_optimizer_v2(params, opt="adamw", lr=1e-3, weight_decay=0.05)
    sched, _ = create_scheduler_v2(opt, sched="cosine", num_epochs=2, updates_per_epoch=10, step_on_epochs=False,
                                   min_lr=0.0)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(by_id)
    sched.step_update(num_updates=7)
    base = {g["lr"] for g in opt.param_groups if not any(by_id[id(p)] in gates for p in g["params"])}
    gate = {g["lr"] for g in opt.param_groups if all(by_id[id(p)] in gates for p in g["params"])}
    assert len(base) == 1 and len(gate) == 1 and 0 < base.pop() * 10 == pytest.approx(gate.pop())
    for g in opt.param_groups:  # timm's rule: no decay on 1-D parameters
        assert (g["weight_decay"] == 0.0) == all(p.ndim <= 1 for p in g["params"])
    plain = timm.create_model("plain_resnet20")  # no gates: the scale has nothing to act on (as in comparisons)
    assert optimizer_params(plain, 1e-3, 0.05, True, gate_lr_scale=10.0) is plain


def test_train_init_from_a_plain_file_starts_at_the_plain_accuracy(plain_run, tmp_path):
    """With a negligible learning rate the runs differ only in their start: the warm-started SE and BAv2 runs
    see the same batches as the plain run (no augmentation), move the same BatchNorm statistics, and end with
    the plain run's validation loss."""
    path = tmp_path / "plain.pth"
    torch.save(load_checkpoint(run_checkpoint(plain_run))["model"], path)
    still = dict(TINY, lr=1e-12, warmup_lr=1e-12, min_lr=1e-12, recipe="none")
    losses = {}
    for name in ("plain_resnet20", "se_resnet20", "bav2_resnet20"):
        summary = train(*from_flat(dict(model=name, init_from=str(path), gate_lr_scale=5.0,
                                        output=str(tmp_path / name), **still)))
        losses[name] = summary["loss"]
    assert losses["se_resnet20"] == pytest.approx(losses["plain_resnet20"], rel=1e-4)
    assert losses["bav2_resnet20"] == pytest.approx(losses["plain_resnet20"], rel=1e-4)
    state = load_checkpoint(run_checkpoint(tmp_path / "bav2_resnet20"))
    assert state["config"]["init_from"] == str(path) and state["config"]["gate_lr_scale"] == 5.0


def test_wrong_init_weights_are_a_user_error(plain_run, tmp_path):
    with pytest.raises(UserError, match="do not fit"):
        train(*from_flat(dict(model="bav2_resnet56", init_from=str(plain_run), output=str(tmp_path / "x"), **TINY)))


@pytest.mark.parametrize("recipe", ["finetune_imagenet_bav2", "finetune_fmnist"])
def test_finetune_recipes_load_with_their_gate_learning_rate(recipe):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    cfg, _ = config_from_args(parser.parse_args(["--config", recipe, "--init-from", "runs/plain"]))
    assert cfg.model.init_from == "runs/plain" and cfg.optim.gate_lr_scale > 1
    assert cfg.model.name.startswith("bav2_")


def test_init_from_a_saved_model_folder(tmp_path):
    plain = timm.create_model("plain_resnet20")
    folder = bridgeattn.save_pretrained(plain, tmp_path / "plain")
    model = bridgeattn.create_model("bav2_resnet20")
    init_from(model, str(folder))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="neither a run folder"):
        init_from(model, str(tmp_path))


def test_init_from_says_what_it_loaded_and_the_run_scores_its_start(plain_run, tmp_path, caplog):
    plain = load_checkpoint(run_checkpoint(plain_run))
    caplog.set_level("INFO", logger="bridgeattn")
    summary = train(*from_flat(dict(model="bav2_resnet20", init_from=str(plain_run), output=str(tmp_path / "r"),
                                    **dict(TINY, lr=1e-12, warmup_lr=1e-12, min_lr=1e-12))))
    assert f"warm-started 9 gates of bav2_resnet20 from {plain_run}: exact at step 0" in caplog.text
    report = summary["init_from"]
    assert (report["how"], report["gates"], report["exact"], report["dropped"]) == ("warm start", 9, True, [])
    assert report["loaded"] == len(plain["model"])
    # the step-0 validation is the plain run's final one: the warm-started model computes the plain function
    assert report["step0_top1"] == plain["history"][-1]["top1"]
    assert report["step0_loss"] == pytest.approx(plain["history"][-1]["loss"], rel=1e-5)
    assert load_checkpoint(find_resume(tmp_path / "r"))["init_from"] == report  # kept for a resumed run's summary
    # another number of classes: the classifier stays fresh, and the line says the start is not the plain function
    model = bridgeattn.create_model("bav2_resnet20", num_classes=5, in_chans=plain["in_chans"])
    other = init_from(model, str(plain_run))
    assert other["reshaped"] == ["fc.bias", "fc.weight"] and not other["exact"]
    assert "not exact at step 0: 2 tensors of another shape (fc.bias, fc.weight)" in caplog.text
