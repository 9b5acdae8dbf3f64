"""The training configuration: one tree of dataclasses, the flags generated from it, launch options never stored."""
from __future__ import annotations

import argparse
import importlib
import math
import pickle

import pytest
import torch
import yaml

from bridgeattn.cli.main import main
from bridgeattn.config import (
    LAUNCH_OPTIONS,
    OPTIONS,
    LaunchOptions,
    TrainConfig,
    add_train_arguments,
    config_from_args,
    from_flat,
    load_yaml,
    make_config,
)
from bridgeattn.engine import checkpoint as ckpt
from bridgeattn.errors import UserError

engine_train = importlib.import_module("bridgeattn.engine.train")

# (flag, default, help) of every `bridgeattn train` option before the configuration became a tree of sections
# (the hand-written FLAGS table of engine/config.py); the generated flags must keep them.
BEFORE = [
    ('--model', 'bav2_resnet20', 'model name (see `bridgeattn models`)'),
    ('--model-kwargs', {}, "extra create_model arguments: 'drop_rate=0.1 rd_ratio=0.125'"),
    ('--data', 'fashion-mnist',
     'dataset spec: fashion-mnist | folder:PATH | cifar10:PATH | cifar100:PATH | synthetic[:N]'),
    ('--img-size', None, "input image size (default: the data set's own)"),
    ('--in-chans', None, "input channels, 1 or 3 (default: the data set's own)"),
    ('--recipe', 'light', 'augmentation recipe: light | imagenet | none'),
    ('--aa', None, 'timm auto-augment string, e.g. rand-m9-mstd0.5-inc1 (imagenet recipe)'),
    ('--color-jitter', 0.4, 'color jitter strength (imagenet recipe)'),
    ('--reprob', 0.0, 'random erasing probability (imagenet recipe)'),
    ('--interpolation', 'bicubic', 'resize interpolation'),
    ('--crop-pct', 0.875, 'eval center-crop fraction'),
    ('--train-subset', None, 'use the first N training samples'),
    ('--val-subset', None, 'use the first N validation samples'),
    ('--strict-data', False, 'stop at the first unreadable image instead of skipping it'),
    ('--download', True, "allow torchvision's download when local data files are absent"),
    ('--workers', 2, 'data loader worker processes per training process'),
    ('--epochs', 10, 'number of epochs'),
    ('--batch-size', 128, 'batch size per process'),
    ('--val-batch-size', None, 'eval batch size per process (default: 2x --batch-size)'),
    ('--grad-accum', 1, 'accumulate gradients over N batches per optimizer step'),
    ('--opt', 'adamw', 'optimizer (timm name: adamw, sgd, lamb, ...)'),
    ('--lr', 0.001, 'peak learning rate'),
    ('--momentum', 0.9, 'SGD momentum'),
    ('--opt-eps', None, 'optimizer epsilon'),
    ('--opt-betas', None, 'optimizer betas, e.g. 0.9 0.999'),
    ('--weight-decay', 0.05, 'weight decay'),
    ('--filter-bias-and-bn', True, 'no weight decay on biases and 1-D params'),
    ('--sched', 'cosine', 'learning rate schedule, stepped per iteration'),
    ('--warmup-epochs', 0.0, 'linear warm-up epochs'),
    ('--warmup-lr', 1e-06, 'learning rate at the start of warm-up'),
    ('--min-lr', 1e-05, 'final learning rate of the cosine schedule'),
    ('--clip-grad', None, 'clip the gradient norm to this value (none: off)'),
    ('--mixup', 0.0, 'Mixup alpha (0: off)'),
    ('--cutmix', 0.0, 'CutMix alpha (0: off)'),
    ('--mixup-prob', 1.0, 'probability of mixing a batch'),
    ('--mixup-switch-prob', 0.5, 'probability of CutMix instead of Mixup when both are on'),
    ('--mixup-mode', 'batch', 'batch | pair | elem'),
    ('--smoothing', 0.0, 'label smoothing'),
    ('--ema', False, 'keep an exponential moving average of the weights (timm ModelEmaV3)'),
    ('--ema-decay', 0.9998, 'EMA decay'),
    ('--device', 'auto', 'auto | cpu | cuda'),
    ('--amp', False, 'mixed precision: float16 + grad scaler on CUDA, bfloat16 autocast on CPUs with native bf16'),
    ('--amp-dtype', 'auto', 'auto | float16 | bfloat16'),
    ('--channels-last', False, 'channels_last memory format'),
    ('--sync-bn', False, 'SyncBatchNorm across processes (CUDA only)'),
    ('--freeze-bn', False, "freeze every BatchNorm, the gate's included (fine-tuning with small batches)"),
    ('--deterministic', False, 'deterministic algorithms (bit-exact resume on CPU)'),
    ('--seed', 42, 'seed for model init, data order and augmentation'),
    ('--output', None, 'run folder (default: runs/<model>-<date>-<time>)'),
    ('--resume', None, "'auto' (latest good checkpoint in --output) or a checkpoint path"),
    ('--keep', 0, 'epoch checkpoints kept besides the last and the best'),
    ('--skip-nonfinite', 0, 'skip up to N steps with a NaN/Inf loss instead of stopping'),
    ('--unsafe-load', False, 'allow checkpoints that need arbitrary code to load (trusted files only)'),
    ('--tensorboard', False, 'write TensorBoard events (needs the tensorboard package)'),
    ('--plots', True, 'write curves.png and confusion.png'),
    ('--progress', True, 'show a progress bar'),
    ('--nproc', 1, 'processes on this machine: relaunches itself under torchrun'),
    ('--max-restarts', 0, 'torchrun elastic restarts after a failed process (with --nproc)'),
]
# what changed on purpose (docs/cli.md): a new option; help that contradicted docs/data.md; the default is shown
# once, and not at all when it is "not given" (formerly "(default: None)", also after a text naming the default)
ADDED = {"--warmup-prefix", "--init-from", "--gate-lr-scale", "--overwrite"}
# --resume alone now means auto; --data names wds:; --device says what auto is and takes cuda:N
NEW_HELP = {"--train-subset", "--val-subset", "--resume", "--data", "--device"}
TINY_FLAGS = ["--model", "bav2_resnet20", "--data", "synthetic:64", "--img-size", "16", "--batch-size", "16",
              "--epochs", "1", "--workers", "0", "--no-progress", "--no-plots"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser


def _parse(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(argv)


def test_generated_flags_equal_the_former_table_except_the_documented_changes():
    actions = {a.option_strings[0]: a for a in _parser()._actions if a.option_strings and a.dest != "help"}
    actions.pop("--config")
    before = {flag: (default, help_text) for flag, default, help_text in BEFORE}
    assert set(actions) == set(before) | ADDED
    defaults = {opt.flag: opt.default for opt in [*OPTIONS.values(), *LAUNCH_OPTIONS.values()]}
    for flag, (default, help_text) in before.items():
        assert defaults[flag] == default, flag
        if flag not in NEW_HELP:
            said = "(default:" in help_text or default in (None, {})
            once = help_text if said else f"{help_text} (default: {default})"
            assert actions[flag].help == once, flag
    assert actions["--val-batch-size"].help == "eval batch size per process (default: 2x --batch-size)"
    assert "evenly spaced" in actions["--train-subset"].help
    # booleans switch both ways, choices are checked by argparse
    assert actions["--ema"].option_strings == ["--ema", "--no-ema"]
    assert actions["--sched"].choices == ("cosine", "tanh", "step", "multistep", "poly", "constant", "none")


def test_sections_flat_keys_and_nested_yaml(tmp_path):
    cfg = make_config(model="plain_resnet20", data="synthetic", lr=0.5, strict_data=True)
    assert (cfg.model.name, cfg.data.spec, cfg.optim.lr, cfg.data.strict) == ("plain_resnet20", "synthetic", 0.5, True)
    flat = cfg.to_dict()
    assert flat["model"] == "plain_resnet20" and flat["strict_data"] is True and flat["lr"] == 0.5
    assert not set(flat) & set(LAUNCH_OPTIONS)  # nothing of the invocation is stored
    assert make_config(flat) == cfg  # the stored form loads back to the same tree
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: {name: plain_resnet20}\noptim: {lr: 0.5, epochs: 3}\ndata: {spec: synthetic}\n")
    loaded = make_config(load_yaml(nested))
    assert (loaded.model.name, loaded.optim.lr, loaded.optim.epochs, loaded.data.spec) == (
        "plain_resnet20", 0.5, 3, "synthetic")
    with pytest.raises(UserError, match="unknown training option 'optim.lrr'; did you mean"):
        make_config({"optim": {"lrr": 1}})
    with pytest.raises(UserError, match="'output' is a launch option"):
        make_config(output="runs/x")


def test_an_older_flat_config_yaml_loads_without_its_launch_options(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text(yaml.safe_dump({**from_flat({"model": "plain_resnet20", "epochs": 3})[0].to_dict(),
                                   "output": "runs/old", "resume": "auto", "unsafe_load": True, "progress": False,
                                   "nproc": 1, "max_restarts": 0}, sort_keys=False))
    with pytest.warns(UserWarning, match="ignored output, progress, resume, unsafe_load: launch options"):
        values = load_yaml(old)
    assert make_config(values).optim.epochs == 3 and not set(values) & set(LAUNCH_OPTIONS)


def test_bav1_recipe_lr_follows_the_reference_schedule_at_every_epoch():
    cfg, _ = config_from_args(_parse(["--config", "imagenet_bav1"]))
    assert cfg.run.amp is False and cfg.optim.warmup_prefix is True
    steps = 7  # updates per epoch
    optimizer, scheduler = engine_train._build_optimization(cfg, torch.nn.Linear(2, 2), steps)

    def reference(epoch: float) -> float:  # linear warm-up 0 -> 0.1 over 5 epochs, then cosine over 95 to 0
        if epoch < 5:
            return 0.1 * epoch / 5
        return 0.5 * 0.1 * (1 + math.cos(math.pi * (epoch - 5) / 95))

    for step in range(0, 100 * steps + 1):
        scheduler.step_update(num_updates=step)
        lr = optimizer.param_groups[0]["lr"]
        assert lr == pytest.approx(reference(step / steps), abs=1e-12), step
    assert reference(5) == 0.1  # the cosine starts at the peak, right after the warm-up


@pytest.mark.parametrize("recipe, updates, first, second", [
    # the BAv1 reference steps at 0.1 / (5 x 5005) ~ 4e-6 first (its warm-up counts from 1, its epoch keeps the
    # last partial batch); here a step is a full batch (5004 per epoch) and timm's warm-up starts at warmup_lr
    ("imagenet_bav1", 5004, 0.0, 0.1 / (5 * 5004)),
    # the BAv2 reference applies lr(k - 1) at step k (1e-6 twice), timm's train.py and this engine lr(k)
    ("imagenet_bav2", 1251, 1e-6, 1e-6 + (1e-3 - 1e-6) / (20 * 1251)),
])
def test_recipe_lr_of_the_first_two_steps(recipe, updates, first, second):
    """docs/spec.md, section 7: step 0 trains at the lr the scheduler starts with, step k at step_update(k)'s."""
    cfg, _ = config_from_args(_parse(["--config", recipe]))
    optimizer, scheduler = engine_train._build_optimization(cfg, torch.nn.Linear(2, 2), updates)
    lrs = [optimizer.param_groups[0]["lr"]]
    scheduler.step_update(num_updates=1)  # what train_one_epoch calls after optimizer step 0
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([first, second], rel=1e-12, abs=1e-15)


class _Marker:
    """Unpickling creates the marker file: the proof that a load ran code."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_unsafe_load_in_a_recipe_runs_no_code(tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "payload": _Marker(marker)}, evil)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"unsafe_load: true\nresume: {evil}\n")
    with pytest.warns(UserWarning, match="ignored resume, unsafe_load"):
        code = main(["train", "--config", str(recipe), "--resume", str(evil), *TINY_FLAGS,
                     "--output", str(tmp_path / "run")])
    assert code == 2 and not marker.exists()
    assert "--unsafe-load" in capsys.readouterr().err  # refused by the safe loader, which names the escape hatch
    with pytest.warns(UserWarning, match="ignored resume, unsafe_load"):  # the recipe alone resumes nothing
        assert main(["train", "--config", str(recipe), *TINY_FLAGS, "--output", str(tmp_path / "fresh")]) == 0
    assert not marker.exists()
    stored = yaml.safe_load((tmp_path / "fresh" / "config.yaml").read_text())
    assert not set(stored) & set(LAUNCH_OPTIONS)


def test_unsafe_load_in_a_run_folders_config_runs_no_code(tmp_path, capsys):
    marker, run = tmp_path / "marker", tmp_path / "run"
    run.mkdir()
    config = {**make_config(model="bav2_resnet20", data="synthetic:64", img_size=16).to_dict(), "unsafe_load": True}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    ckpt.save_checkpoint({"epoch": 1, "step": 4, "payload": _Marker(marker)}, run, is_best=False)
    code = main(["train", *TINY_FLAGS, "--output", str(run), "--resume", "auto"])
    assert code == 2 and not marker.exists()
    assert "--unsafe-load" in capsys.readouterr().err
    assert pickle.loads(pickle.dumps(_Marker(tmp_path / "proof"))) and (tmp_path / "proof").exists()  # it would


def test_config_of_a_run_starts_a_new_run(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", *TINY_FLAGS, "--output", str(first), "--seed", "3"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    second = tmp_path / "second"
    assert main(["train", "--config", str(first / "config.yaml"), "--output", str(second), "--no-progress"]) == 0
    assert after_unchanged(first, before)
    assert "resumed" not in capsys.readouterr().out
    assert yaml.safe_load((second / "config.yaml").read_text()) == yaml.safe_load((first / "config.yaml").read_text())
    cfg, options = config_from_args(_parse(["--config", str(first)]))  # the folder itself works too
    assert cfg.run.seed == 3 and options.output is None and options.resume is None


def after_unchanged(folder, before) -> bool:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


@pytest.mark.parametrize("argv, message", [
    (["--clip-grad", "-1"], r"--clip-grad must be a positive gradient norm \(or none: off\), got -1.0"),
    (["--ema-decay", "5"], r"--ema-decay must be in \[0, 1\), got 5.0"),
    (["--mixup-prob", "2"], r"--mixup-prob must be in \[0, 1\], got 2.0"),
    (["--crop-pct", "0"], r"--crop-pct must be in \(0, 1\], got 0.0"),
    (["--train-subset", "0"], "--train-subset must be at least 1, got 0"),
])
def test_values_out_of_range_are_refused_up_front(argv, message):
    with pytest.raises(UserError, match=message):
        config_from_args(_parse(argv))


def test_validate_does_not_read_the_environment(monkeypatch):
    """The launcher, not the configuration, knows about torchrun: validation never looks at os.environ."""
    import os

    class Watched(dict):
        reads: list[str] = []

        def __getitem__(self, key):
            self.reads.append(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            self.reads.append(key)
            return super().get(key, default)

        def __contains__(self, key):
            self.reads.append(key)
            return super().__contains__(key)

    watched = Watched(os.environ, LOCAL_RANK="1", WORLD_SIZE="2")
    monkeypatch.setattr(os, "environ", watched)
    cfg = TrainConfig()
    assert cfg.validate() is cfg and LaunchOptions().validate() is not None
    assert watched.reads == []


def test_a_recipe_never_makes_a_new_run_download_or_read_the_weights_it_names(tmp_path):
    recipe = tmp_path / "config.yaml"
    for overlay in ({"url": "http://127.0.0.1:9/payload.pth"}, {"file": str(tmp_path / "payload.pth")}):
        recipe.write_text(yaml.safe_dump({"model": "bav2_resnet20", "model_kwargs": {
            "pretrained": True, "pretrained_cfg_overlay": overlay, "drop_rate": 0.1}}))
        with pytest.warns(UserWarning, match="ignoring pretrained, pretrained_cfg_overlay stored with .*never down"):
            loaded = load_yaml(recipe)
        assert loaded["model_kwargs"] == {"drop_rate": 0.1}
        assert make_config(loaded).model.kwargs == {"drop_rate": 0.1}


def test_flag_text_and_yaml_values_convert_alike(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("clip_grad: none\nepochs: 3.0\nema: 'yes'\nopt_betas: [0.9, 0.99]\n"
                      "model_kwargs: {drop_rate: 0.1, rd_ratio: 0.125}\n")
    from_yaml = make_config(load_yaml(recipe))
    flags = _parse(["--clip-grad", "none", "--epochs", "3", "--ema", "--opt-betas", "0.9,0.99",
                    "--model-kwargs", "drop_rate=0.1 rd_ratio=0.125"])
    assert config_from_args(flags)[0] == from_yaml
    assert (from_yaml.optim.clip_grad, from_yaml.optim.epochs, from_yaml.optim.ema) == (None, 3, True)
    assert from_yaml.model.kwargs == {"drop_rate": 0.1, "rd_ratio": 0.125}
    for values, message in (({"epochs": 2.5}, "option 'epochs': 2.5 is not a valid int"),
                            ({"ema": "maybe"}, "option 'ema': 'maybe' is not a valid bool"),
                            ({"epochs": None}, "option 'epochs' cannot be empty"),
                            ({"epoch": 3}, "unknown training option 'epoch'; did you mean epochs")):
        with pytest.raises(UserError, match=message):
            make_config(values)
    with pytest.raises(SystemExit):
        _parse(["--epochs", "abc"])


def test_model_kwargs_built_in_python_must_be_a_mapping():
    cfg = TrainConfig()
    cfg.model.kwargs = ["drop_rate", 0.1]  # the flag layer always gives a dict; Python code may not
    with pytest.raises(UserError, match="model_kwargs must be a mapping"):
        cfg.validate()
