"""The command line's conventions: fast help without torch, one-line errors, the same flags everywhere."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridgeattn.cli.main import COMMANDS, main

SRC = Path(__file__).resolve().parents[2] / "src"


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_version_answer_for_every_command():
    # every command's --help, the top-level --help and --version in one fresh interpreter; how fast they answer
    # beside `import timm` is measured by benchmarks/cli_startup.py
    code = f"""
import sys
from bridgeattn.cli.main import main
for argv in [["--help"], ["--version"], *[[c, "--help"] for c in {sorted(COMMANDS)!r}]]:
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)
heavy = sorted(m for m in ("matplotlib", "onnx", "onnxruntime", "pytorch_grad_cam") if m in sys.modules)
print("HEAVY", heavy)
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout
    assert "bridgeattn 0." in result.stdout  # --version, from the package metadata


def test_importing_the_package_still_registers_the_models_with_timm():
    result = _python("import sys, bridgeattn; import timm; "
                     "print(timm.is_model('bav2_resnet20'), type(timm.create_model('bav2_resnet20')).__name__)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "BridgeResNet"]
    after = _python("import timm, bridgeattn; print(timm.is_model('bav1_resnet50'))")
    assert after.stdout.strip() == "True", after.stderr[-2000:]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bridgeattn {command}")
    assert "(default: None)" not in out  # a default is shown when it says something


def _parser(command: str):
    from bridgeattn.cli.main import build_parser

    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


def _options(command: str) -> dict:
    return {a.option_strings[-1 if len(a.option_strings) > 1 and a.option_strings[0] == "-c" else 0]: a
            for a in _parser(command)._actions if a.option_strings}


# switches that choose what to print or do, not settings with an on and an off
ACTIONS = {"--help", "--families", "--names-only", "--print-json", "--full"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_one_convention_for_every_command(command):
    import argparse

    options = _options(command)
    for flag, action in options.items():
        if isinstance(action, argparse._StoreTrueAction):
            assert flag in ACTIONS, f"{command} {flag}: an on/off setting needs a --no- form"
        if isinstance(action, argparse.BooleanOptionalAction):
            assert f"--no-{flag[2:]}" in action.option_strings
    if "--json" in options:  # a path, with --print-json for stdout
        assert options["--json"].nargs is None and options["--json"].metavar == "PATH"
        assert "--print-json" in options
    if "--progress" in options:
        assert options["--progress"].default in (True, argparse.SUPPRESS)
    if "--img-size" in options:
        assert options["--img-size"].default in (None, argparse.SUPPRESS)  # each model's own size by default


def test_compare_and_demo_take_the_training_flags_of_train():
    from bridgeattn.config import OPTIONS

    options = _options("train")
    train = {opt.flag: options[opt.flag] for opt in OPTIONS.values()}
    for command, own in (("compare", {"--model", "--seed"}), ("demo", {"--model"})):
        options = _options(command)
        for flag, action in train.items():
            if flag in own:
                continue
            other = options[flag]
            def shape(a):
                return a.dest, getattr(a.type, "__name__", a.type), a.choices, a.nargs, a.metavar, type(a).__name__

            assert shape(other) == shape(action), (command, flag)
            assert other.help.split(" (default:")[0] == action.help.split(" (default:")[0], (command, flag)


def test_lists_take_commas_or_spaces():
    from bridgeattn.cli.main import build_parser

    for command, extra in (("compare", []), ("demo", []), ("benchmark", [])):
        parser = build_parser(only=command)
        a = parser.parse_args([command, "--models", "plain,se", *extra])
        b = parser.parse_args([command, "--models", "plain", "se", *extra])
        assert a.models == b.models == ["plain", "se"]
    parser = build_parser(only="train")
    assert parser.parse_args(["train", "--opt-betas", "0.8,0.9"]).opt_betas == [0.8, 0.9]
    assert parser.parse_args(["train", "--opt-betas", "0.8", "0.9"]).opt_betas == [0.8, 0.9]


def _error(argv, capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--checkpoint", "x", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["models", "--img-size", "0"], "--img-size: must be at least 1, got 0"),
    (["benchmark", "--models", "plain_resnet20", "--threads", "0"], "--threads: must be at least 1, got 0"),
    (["benchmark", "--models", "plain_resnet20", "--device", "gpu"], "expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["train", "--train-subset", "0"], "--train-subset must be at least 1, got 0"),
    (["train", "--clip-grad", "-1"], "--clip-grad must be a positive gradient norm"),
    (["train", "--ema-decay", "5"], r"--ema-decay must be in [0, 1), got 5.0"),
    (["compare", "--lr", "-1"], "--lr must be positive"),
])
def test_nonsense_is_refused_in_one_line(argv, message, capsys):
    assert message in _error(argv, capsys)


def test_model_arguments_and_a_too_small_size_are_refused_before_the_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["train", "--data", "synthetic:64", "--epochs", "1", "--output", str(run)]
    err = _error([*flags, "--model", "bav2_resnet50", "--img-size", "16"], capsys)
    assert "--img-size 16 does not fit bav2_resnet50" in err and "it runs on 32 px" in err
    err = _error([*flags, "--model", "bav2_swin_tiny_patch4_window7_224", "--img-size", "64"], capsys)
    assert "it runs on 224 px" in err
    err = _error([*flags, "--model-kwargs", "rd_ratio=abc"], capsys)
    assert "bav2_resnet20 cannot be built with --model-kwargs 'rd_ratio=abc'" in err
    assert not run.exists()
    from bridgeattn.models.checks import check_model_input

    check_model_input("bav2_resnet50", 32)  # the size it names does fit
    check_model_input("bav2_resnet20", 8, in_chans=1, rd_ratio=0.25)


def test_a_relative_data_folder_is_stored_absolute(tmp_path, monkeypatch):
    from bridgeattn.config import config_from_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipe.yaml").write_text("data: folder:images\n")
    cfg, _ = config_from_args(_parser("train").parse_args(["--data", "folder:images"]))
    assert cfg.to_dict()["data"] == f"folder:{tmp_path / 'images'}"
    cfg, _ = config_from_args(_parser("train").parse_args(["--config", "recipe.yaml"]))
    assert cfg.data.spec == f"folder:{tmp_path / 'images'}"
    assert config_from_args(_parser("train").parse_args(["--data", "synthetic:8"]))[0].data.spec == "synthetic:8"


def test_a_subset_larger_than_its_split_keeps_the_split_with_a_warning():
    from bridgeattn.data import DataConfig, build_datasets

    with pytest.warns(UserWarning, match="train_subset 500 is more than the 40 train samples of synthetic:40"):
        train, val, _ = build_datasets(DataConfig("synthetic:40", train_subset=500))
    assert len(train) == 40


def test_models_streams_its_rows(monkeypatch, capsys):
    import bridgeattn.cli.commands.models as command

    seen = []
    real = command._cost

    def cost(name, img_size):
        seen.append(capsys.readouterr().out)  # what the user saw before this row was counted
        return real(name, img_size)

    monkeypatch.setattr(command, "_cost", cost)
    assert main(["models", "plain_resnet[23]?"]) == 0
    assert len(seen) >= 2 and "params" in seen[0] and "plain_resnet" in seen[1]


def test_json_path_and_print_json(tmp_path, capsys):
    import json

    out = tmp_path / "deep" / "rows.json"
    assert main(["models", "plain_resnet20", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "plain_resnet20" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())[0]["model"] == "plain_resnet20"
    assert main(["models", "plain_resnet20", "--print-json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


@pytest.mark.parametrize("argv, hint", [
    (["trian"], "did you mean train?"),
    (["train", "--lrr", "3"], "did you mean --lr?"),
    (["train", "--sched", "cosin"], "did you mean cosine?"),
])
def test_typos_name_the_closest_choice(argv, hint, capsys):
    assert hint in _error(argv, capsys)


def test_resume_alone_means_auto():
    parser = _parser("train")
    assert parser.parse_args(["--resume"]).resume == "auto"
    assert parser.parse_args(["--resume", "run/checkpoints/last.pth"]).resume == "run/checkpoints/last.pth"
    assert not hasattr(parser.parse_args([]), "resume")  # unset flags stay out of the namespace


def _help_entries(parser) -> dict[str, str]:
    """Each option's help as printed (continuation lines joined), by its first flag."""
    entries: dict[str, str] = {}
    current = None
    for line in parser.format_help().splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("argv, unknown, hint", [
    (["train", "--lr-rate", "0.1"], "--lr-rate 0.1", "did you mean --lr?"),
    (["train", "--epoch", "1"], "--epoch 1", "did you mean --epochs?"),  # an abbreviation is a typo, not --epochs
    (["benchmark", "--models", "a", "--trian"], "--trian", "did you mean --train?"),
    (["eval", "--checkpoint", "x", "--batch", "4"], "--batch 4", "did you mean --batch-size?"),
])
def test_a_commands_unknown_flag_is_reported_by_that_command(argv, unknown, hint, capsys):
    command = argv[0]
    err = _error(argv, capsys)
    assert err.startswith(f"bridgeattn {command}: error: unrecognized arguments: {unknown};"), err
    assert hint in err and err.rstrip().endswith(f"(see 'bridgeattn {command} --help')"), err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_takes_abbreviations(command):
    from bridgeattn.cli.main import build_parser

    parser = build_parser(only=command)
    assert parser.allow_abbrev is False and parser.commands[command].allow_abbrev is False


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_switch_shows_its_default_and_every_device_is_auto(command, monkeypatch):
    import argparse

    monkeypatch.setenv("COLUMNS", "200")
    entries = _help_entries(_parser(command))
    for flag, action in _options(command).items():
        if isinstance(action, argparse.BooleanOptionalAction) and action.default is not argparse.SUPPRESS:
            assert "(default: " in entries[action.option_strings[0]], (command, flag)
    if "--device" in entries:
        assert "auto: cuda if available, else cpu" in entries["--device"], command
        assert command == "demo" or "(default: auto)" in entries["--device"], command  # demo: the recipe's
    if "--data" in entries and command != "shard":  # shard writes the wds: shards
        assert "wds:" in entries["--data"] or "(default: the run's own" in entries["--data"], command


def test_benchmark_takes_device_auto():
    from bridgeattn.tools.benchmark import benchmark

    report = benchmark(["plain_resnet20"], batch_size=2, img_size=8, repeats=1, warmup=0, device="auto")
    import torch

    assert report["machine"]["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
