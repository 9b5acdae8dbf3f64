"""``compare``: the statistics on known numbers, the report, resuming, and a real run on synthetic data."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bridgeattn.errors import UserError
from bridgeattn.tools import compare as compare_module
from bridgeattn.tools.compare import CompareConfig, paired_difference, resolve_models, run_compare

T_975_DF1 = 12.7062  # Student t, 97.5 % quantile, 1 degree of freedom (printed tables)


@pytest.mark.parametrize(
    ("confidence", "df", "expected"),
    [(0.95, 1, T_975_DF1), (0.95, 2, 4.3027), (0.95, 3, 3.1824), (0.95, 4, 2.7764), (0.95, 9, 2.2622),
     (0.95, 30, 2.0423), (0.95, 100, 1.9840), (0.90, 5, 2.0150), (0.99, 10, 3.1693), (0.80, 4, 1.5332)],
)
def test_paired_interval_uses_the_t_quantile_of_the_tables(confidence: float, df: int, expected: float) -> None:
    n = df + 1
    diffs = [float(i * i) for i in range(n)]  # any spread; the half width is t * sd / sqrt(n)
    d = paired_difference(diffs, [0.0] * n, confidence)
    assert d["half_width"] / (d["std"] / math.sqrt(n)) == pytest.approx(expected, abs=1e-4)


def test_paired_interval_on_known_numbers() -> None:
    # Differences 1, 2, 3: mean 2, sd 1, half width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138.
    d = paired_difference([91.0, 92.0, 93.0], [90.0, 90.0, 90.0])
    assert d["mean"] == pytest.approx(2.0)
    assert d["std"] == pytest.approx(1.0)
    assert d["half_width"] == pytest.approx(2.484138, abs=1e-6)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    # Pairing matters: a constant per-seed offset has zero spread, so the interval collapses to the mean.
    same = paired_difference([80.0, 90.0, 70.0], [79.5, 89.5, 69.5])
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((0.5, 0.5))
    assert paired_difference([1.0], [0.0])["ci_low"] is None  # one pair: no interval


def test_short_names_resolve_and_unknown_names_are_user_errors() -> None:
    assert resolve_models(["plain", "bav2", "fca"], "resnet20") == [
        ("plain", "plain_resnet20"), ("bav2", "bav2_resnet20"), ("fca", "fca_resnet20")]
    with pytest.raises(UserError, match="unknown model"):
        resolve_models(["nope"], "resnet20")


class FakeEngine:
    """Stands in for ``engine.train``: a deterministic top-1 per (model, seed), records every call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, options: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(options)
        gain = 1.0 if options["model"].startswith("bav2") else 0.0
        top1 = 80.0 + options["seed"] + gain + 0.1 * options["seed"] * gain
        return {"top1": top1, "top5": 99.0, "loss": 0.5, "best_top1": top1, "epochs": options["epochs"],
                "train_time_s": 1.0, "train_img_per_s": 100.0, "params": 0, "output": options["output"]}


@pytest.fixture
def engine(monkeypatch) -> FakeEngine:
    """The stand-in engine for every cell, and the shape of the data (16 px) without building the data set."""
    fake = FakeEngine()
    monkeypatch.setattr(compare_module, "_train", fake)
    monkeypatch.setattr(compare_module, "_data_shape", lambda cfg: (10, 3, 16))
    return fake


def test_compare_report_and_resume_with_a_stand_in_engine(tmp_path: Path, engine: FakeEngine) -> None:
    cfg = CompareConfig(models=["plain", "bav2"], backbone="resnet20", data="synthetic:64", seeds=[0, 1],
                        output=str(tmp_path), train_options={"epochs": 1, "batch_size": 8}, speed=True,
                        speed_batch=2, speed_reps=1)
    results = run_compare(cfg)
    assert len(engine.calls) == 4
    # Identical recipe in every cell; only model and seed differ.
    recipes = {json.dumps({k: v for k, v in c.items() if k not in ("model", "seed", "output")}, sort_keys=True)
               for c in engine.calls}
    assert len(recipes) == 1
    for name in ("results.json", "results.csv", "results.md", "results.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = {r["model"]: r for r in results["models"]}
    assert rows["plain"]["top1"] == [80.0, 81.0]
    assert rows["bav2"]["delta_vs_plain"] == pytest.approx(1.05)  # diffs 1.0 and 1.1
    half = T_975_DF1 * math.sqrt(0.005) / math.sqrt(2)  # sd of (1.0, 1.1) = sqrt(0.005)
    assert rows["bav2"]["delta_ci_high"] == pytest.approx(1.05 + half, abs=1e-4)
    assert rows["bav2"]["params"] > rows["plain"]["params"] > 0 and rows["plain"]["macs"] > 0
    assert rows["bav2"]["infer_img_per_s"] > 0
    with open(tmp_path / "results.csv") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["plain", "bav2"]
    assert "bav2_resnet20" in (tmp_path / "results.md").read_text()
    # Re-run: every cell is finished, nothing is retrained, the report is the same.
    again = run_compare(cfg)
    assert len(engine.calls) == 4
    assert again["models"][1]["top1_mean"] == results["models"][1]["top1_mean"]
    # A lost summary retrains that cell only; a different budget in the same folder is refused.
    (tmp_path / "cells" / "bav2_resnet20" / "seed1" / "summary.json").unlink()
    run_compare(cfg)
    assert [(c["model"], c["seed"]) for c in engine.calls[4:]] == [("bav2_resnet20", 1)]
    cfg.train_options["epochs"] = 2
    with pytest.raises(UserError, match="different recipe"):
        run_compare(cfg)


def test_compare_trains_for_real_on_synthetic_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    try:
        from bridgeattn.engine import train  # noqa: F401
    except ImportError:
        pytest.skip("the training engine is not available")
    from bridgeattn.cli.main import main

    out = tmp_path / "cmp"
    argv = ["compare", "--models", "plain,bav2", "--data", "synthetic:64", "--seeds", "2", "--epochs", "1",
            "--batch-size", "16", "--img-size", "16", "--output", str(out), "--no-speed"]
    assert main(argv) == 0
    assert "Warning: only 2 paired seeds" in capsys.readouterr().out  # the findings are printed below the table
    results = json.loads((out / "results.json").read_text())
    assert [r["model"] for r in results["models"]] == ["plain", "bav2"]
    assert all(len(r["top1"]) == 2 for r in results["models"])
    assert results["models"][1]["delta_ci_low"] is not None
    for name in ("results.csv", "results.md", "results.png"):
        assert (out / name).is_file()
    stamp = (out / "cells" / "plain_resnet20" / "seed0" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0  # finished cells are skipped
    assert (out / "cells" / "plain_resnet20" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
