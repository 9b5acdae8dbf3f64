"""The benchmark scripts keep working: tiny CPU runs write their JSON and print their summary line."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_suite_runs_quick_on_cpu_and_writes_its_json(tmp_path):
    suite = _script("gpu_suite")
    assert suite.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    ran = [run for run in result["throughput"] if "results" in run]
    assert {(run["mode"], run["amp_dtype"]) for run in ran} == {("train", "bfloat16"), ("infer", "bfloat16")}
    for run in ran:
        assert [r["model"] for r in run["results"]] == list(suite.MODELS)
        assert run["results"][0]["time_ratio"] == 1.0 and all(r["img_per_s"] > 0 for r in run["results"])
    assert all("skipped" in run for run in result["throughput"] if "results" not in run)
    assert [r["model"] for r in result["numerics"]] == list(suite.RESNET20)
    for row in result["numerics"]:
        assert row["finite"] and row["steps"] == 4 and row["forward_rel_error_vs_float64"] < 1e-4
    assert "| bav2_resnet50 |" in (tmp_path / "gpu_suite.md").read_text()


def test_engine_overhead_prints_the_ratio_last(tmp_path, capsys):
    overhead = _script("engine_overhead")
    out = tmp_path / "overhead.json"
    assert overhead.main(["--rounds", "1", "--samples", "32", "--batch-size", "16", "--img-size", "16",
                          "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(out.read_text())
    assert last == f"engine/loop img/s ratio: {result['ratio']:.3f}"
    assert len(result["rounds"]) == 1 and result["engine_img_per_s"] > 0 and result["loop_img_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["engine_img_per_s"] / result["loop_img_per_s"])  # one round


def test_cli_startup_reports_each_command_beside_import_timm(tmp_path, monkeypatch, capsys):
    startup = _script("cli_startup")
    assert {"bridgeattn --help", "bridgeattn eval --checkpoint /nope"} <= set(startup.commands(str(tmp_path)))
    fast = {"python -c 'import timm'": ([sys.executable, "-c", "pass"], 0),
            "refused": ([sys.executable, "-c", "import sys; sys.exit('bad path')"], 1)}
    monkeypatch.setattr(startup, "commands", lambda tmp: fast)  # the real ones take a minute on a loaded machine
    out = tmp_path / "startup.json"
    assert startup.main(["--rounds", "2", "--out", str(out)]) == 0
    rows = {r["command"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["python -c 'import timm'"]["over_timm_s"] == 0 and len(rows["refused"]["runs_s"]) == 2
    assert rows["refused"]["stderr"] == "bad path" and rows["refused"]["cpu_median_s"] >= 0
    assert "refused" in capsys.readouterr().out
