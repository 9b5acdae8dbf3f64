"""What the reports say and show: eval's stored accuracy and its subset, whole-epoch ticks, results.png's bubbles
and legend, Grad-CAM titles that name the prediction and file names that keep the class folder."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from bridgeattn.cli.main import main
from bridgeattn.engine import plots


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the package saves, kept for inspection (still written)."""
    kept, save = [], plots.save

    def keep(fig, path, dpi=None):
        kept.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr(plots, "save", keep)
    return kept


def test_epoch_axes_tick_whole_epochs(figures, tmp_path):
    from bridgeattn.engine.plots import plot_curves

    history = [{"epoch": e, "train_loss": 2.0 / e, "loss": 2.1 / e, "top1": 10.0 * e, "top5": 50.0, "lr": 0.1 / e}
               for e in (1, 2)]
    plot_curves(history, tmp_path / "curves.png")
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
        assert ticks and all(t == int(t) for t in ticks), ticks


def _bubble_inside(ax, collection) -> bool:
    """Whether the scatter bubble of ``collection`` lies wholly inside the axes (display coordinates)."""
    (x, y), = ax.transData.transform(collection.get_offsets())
    radius = math.sqrt(collection.get_sizes()[0]) / 2 * ax.figure.dpi / 72
    box = ax.bbox
    return box.x0 <= x - radius and x + radius <= box.x1 and box.y0 <= y - radius and y + radius <= box.y1


def test_results_png_keeps_its_bubbles_inside_and_explains_the_colours(figures, tmp_path):
    from bridgeattn.tools.compare import plot_chart

    rows = [{"model": "plain", "name": "plain_resnet20", "top1_mean": 80.0, "top1_std": 0.0, "params": 272e3,
             "macs": 41e6},
            {"model": "se", "name": "se_resnet20", "top1_mean": 81.0, "top1_std": 0.0, "params": 278e3, "macs": 41e6},
            {"model": "bav2", "name": "bav2_resnet20", "top1_mean": 82.0, "top1_std": 0.0, "params": 281e3,
             "macs": 41e6}]
    plot_chart(rows, tmp_path / "results.png")
    ax = figures[0].axes[0]
    from matplotlib.collections import PathCollection

    bubbles = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(bubbles) == 3 and all(_bubble_inside(ax, c) for c in bubbles)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["bridge attention (BA)", "other attention", "plain baseline"]


def _compare_report(tmp_path: Path, top1: dict[str, list[float]], params: list[float], macs: list[float]):
    """``compare``'s report of ``{short: top-1 per seed}`` on resnet20: (rows, results.md, results.json)."""
    from bridgeattn.tools.compare import summarize, write_report

    models = [(short, f"{short}_resnet20") for short in top1]
    cells = [{"model": name, "seed": seed, "top1": value} for short, name in models
             for seed, value in enumerate(top1[short])]
    costs = {name: {"params": p, "macs": m} for (_, name), p, m in zip(models, params, macs)}
    rows = summarize(cells, models, costs)
    seeds = list(range(len(next(iter(top1.values())))))
    write_report({"config": {"seeds": seeds, "backbone": "resnet20"}, "data": {"spec": "synthetic:64"},
                  "models": rows}, tmp_path)
    return rows, (tmp_path / "results.md").read_text(), json.loads((tmp_path / "results.json").read_text())


def _drawn(fig) -> dict:
    """What a results.png shows: points, interval ends per x, marker sizes, labels, title, horizontal lines."""
    from matplotlib.collections import PathCollection

    ax = fig.axes[0]
    markers = [c for c in ax.collections if isinstance(c, PathCollection)]
    bars = {}
    for container in ax.containers:  # one ErrorbarContainer per interval: its vertical segment
        (x, low), (_, high) = container.lines[2][0].get_segments()[0]
        bars[round(float(x), 6)] = (float(low), float(high))
    return {"points": [tuple(map(float, c.get_offsets()[0])) for c in markers],
            "sizes": [float(c.get_sizes()[0]) for c in markers], "bars": bars,
            "ticks": [t.get_text() for t in ax.get_xticklabels()], "xlabel": ax.get_xlabel(),
            "ylabel": ax.get_ylabel(), "title": ax.get_title(),
            "hlines": [tuple(line.get_ydata()) for line in ax.lines if len(set(line.get_ydata())) == 1]}


def test_compare_report_says_which_differences_are_shown_and_draws_the_paired_intervals(figures, tmp_path):
    top1 = {"plain": [80.0, 81.0, 82.0], "se": [78.0, 78.9, 80.1],  # se: -2.0, -2.1, -1.9
            "eca": [81.0, 80.0, 82.5], "bav2": [81.0, 82.1, 82.9]}  # eca: +1, -1, +0.5; bav2: +1, +1.1, +0.9
    params, macs = [272_000, 278_000, 272_000, 281_000], [41_000_000] * 4
    rows, md, stored = _compare_report(tmp_path, top1, params=params, macs=macs)
    said = {line.split(":")[0]: line for line in stored["findings"]}
    assert said["se_resnet20"].endswith("behind plain (the interval excludes 0).")
    assert said["eca_resnet20"].endswith("interval contains 0: no difference shown at this budget.")
    assert said["bav2_resnet20"].endswith("ahead of plain (the interval excludes 0).")
    assert len(stored["findings"]) == 3 and "Warning" not in md  # 3 seeds: no warning
    assert all(f"- {line}" in md for line in stored["findings"])
    drawn = _drawn(figures[0])
    by_model = {r["model"]: r for r in rows}
    # the models side by side (params within 3.3 %), plain at 0 with the line, the others at their paired interval
    assert drawn["ticks"] == ["plain", "se", "eca", "bav2"] and "params within 3.3% of each other" in drawn["xlabel"]
    assert [y for _, y in drawn["points"]] == pytest.approx([0.0, -2.0, 0.5 / 3, 1.0])
    assert drawn["bars"] == {i: pytest.approx((by_model[m]["delta_ci_low"], by_model[m]["delta_ci_high"]))
                             for i, m in ((1, "se"), (2, "eca"), (3, "bav2"))}
    assert (0.0, 0.0) in drawn["hlines"] and "paired 95 % interval" in drawn["ylabel"]
    assert len(set(drawn["sizes"])) == 1 and "MACs within 0.0% of each other" in drawn["title"]


def test_compare_report_warns_below_three_seeds_and_clips_intervals_beyond_100(figures, tmp_path):
    # the differences -13.33 and +3.33: mean -5.00, t interval [-110.89, +100.89]
    rows, md, stored = _compare_report(tmp_path, {"plain": [80.0, 80.0], "se": [80 - 40 / 3, 80 + 10 / 3]},
                                       params=[272_000, 278_000], macs=[41_000_000] * 2)
    assert (rows[1]["delta_ci_low"], rows[1]["delta_ci_high"]) == pytest.approx((-110.89, 100.89), abs=0.01)
    assert "| -5.00 [< -100, > +100] |" in md
    assert stored["findings"][0].startswith("Warning: only 2 paired seeds: a 95 % interval of ±12.7 standard errors")
    assert "beyond what a difference of two accuracies can be" in stored["findings"][-1]
    drawn = _drawn(figures[0])
    assert drawn["bars"] == {1: (-100.0, 100.0)} and "intervals clipped at ±100" in drawn["title"]


def test_compare_chart_uses_params_and_macs_where_they_differ(figures, tmp_path):
    top1 = {"plain": [76.0, 77.0, 78.0], "se": [77.0, 77.5, 79.0], "bav2": [77.5, 78.0, 79.5]}
    params, macs = [25_600_000, 28_100_000, 26_900_000], [4_100_000_000, 4_100_000_000, 4_600_000_000]
    _compare_report(tmp_path, top1, params=params, macs=macs)
    drawn = _drawn(figures[0])
    assert drawn["xlabel"] == "parameters (M)" and "bubble area = MACs" in drawn["title"]
    assert [x for x, _ in drawn["points"]] == pytest.approx([p / 1e6 for p in params])
    assert [s / drawn["sizes"][-1] for s in drawn["sizes"]] == pytest.approx([m / macs[-1] for m in macs])


def test_compare_without_plain_says_so_and_charts_top1_over_seeds(figures, tmp_path):
    _, _, stored = _compare_report(tmp_path, {"se": [80.0, 81.0, 82.0], "bav2": [81.0, 81.0, 84.0]},
                                   params=[278_000, 281_000], macs=[41_000_000] * 2)
    assert stored["findings"] == ["No plain model with paired seeds in this comparison: no difference is computed."]
    drawn = _drawn(figures[0])
    assert "mean ± std over seeds" in drawn["ylabel"] and (0.0, 0.0) not in drawn["hlines"]
    assert [y for _, y in drawn["points"]] == pytest.approx([81.0, 82.0])
    assert drawn["bars"] == {0: pytest.approx((80.0, 82.0)), 1: pytest.approx((82.0 - 3 ** 0.5, 82.0 + 3 ** 0.5))}


def test_demo_png_is_titled_with_the_data_set_the_budget_and_the_seed(figures, tmp_path):
    from matplotlib.text import Text

    from bridgeattn.tools.demo import plot_side_by_side

    summaries = {}
    for name in ("bav2_resnet20", "plain_resnet20"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(
            json.dumps({"epoch": e, "top1": 50.0 + e, "train_loss": 1.0 / e}) + "\n" for e in (1, 2)))
        summaries[name] = {"output": str(tmp_path / name), "data": "fashion-mnist", "epochs": 2, "steps": 200,
                           "global_batch": 128, "seed": 42}
    plot_side_by_side(summaries, tmp_path / "demo.png")
    texts = [t.get_text() for t in figures[0].findobj(Text)]
    assert "fashion-mnist: 2 epochs, 200 steps of batch 128, seed 42" in texts


def test_gradcam_titles_name_the_prediction_and_files_keep_the_class_folder(tmp_path, monkeypatch):
    pytest.importorskip("pytorch_grad_cam", reason="the explain extra (grad-cam) is not installed")
    from PIL import Image

    import bridgeattn
    from bridgeattn.tools import explain as explain_module

    titles, save = [], explain_module.save_gradcam_figure
    monkeypatch.setattr(explain_module, "save_gradcam_figure",
                        lambda image, cams, path, title="": titles.append(title) or save(image, cams, path, title))
    for name in ("cat", "dog"):  # the same file name in two class folders
        (tmp_path / "val" / name).mkdir(parents=True)
        Image.new("L", (16, 16), 200).save(tmp_path / "val" / name / "001.png")
    model = bridgeattn.create_model("bav2_resnet20", in_chans=1, num_classes=3).eval()
    files = explain_module.find_images([tmp_path / "val"])
    report = explain_module.explain(model, files, tmp_path / "out", class_names=["a", "b", "c"])
    names = sorted(Path(entry["figure"]).name for entry in report["images"])
    assert names == ["0000_cat_001.png", "0001_dog_001.png"]
    predicted = [["a", "b", "c"][entry["class"]] for entry in report["images"]]
    assert titles == [f"{c}/001.png, predicted: {p}; Grad-CAM of block layer2.0" for c, p in zip(("cat", "dog"),
                                                                                                   predicted)]
    explain_module.explain(model, files[:1], tmp_path / "target", target_class=2, class_names=["a", "b", "c"])
    assert titles[-1] == "cat/001.png, target class: c (--target-class); Grad-CAM of block layer2.0"


def test_eval_says_when_the_stored_accuracy_came_from_a_subset(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "plain_resnet20", "--data", "synthetic:16", "--img-size", "16", "--epochs", "1",
                 "--batch-size", "8", "--val-subset", "3", "--no-progress", "--no-plots", "--output", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--no-progress", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"stored at training time: top-1 \d+\.\d\d % on a subset: the first 3 validation images "
                     r"\(reproduced\)", out), out
    assert main(["eval", "--checkpoint", str(run), "--val-subset", "0", "--no-progress", "--no-plots",
                 "--output", str(tmp_path / "all")]) == 0
    out = capsys.readouterr().out
    assert "(4 images)" in out and "on 3 images: not comparable with these 4" in out, out


def test_the_training_docs_evaluate_the_run_folder_they_train():
    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    outputs = set(re.findall(r'output="([^"]+)"', text)) | set(re.findall(r"--output (\S+)", text))
    for location in re.findall(r"bridgeattn eval --checkpoint (\S+)", text):
        if location.endswith((".safetensors", ".pth")) and "/checkpoints/" not in location:
            continue  # plain weights
        run = location.split("/checkpoints/")[0]
        assert run in outputs, f"docs/training.md evaluates {location}, but no run is trained into {run}"


def test_a_one_epoch_run_ticks_whole_epochs_and_its_lr_panel_shows_warm_up_and_peak(figures, tmp_path):
    from bridgeattn.config import from_flat
    from bridgeattn.engine import train

    # 64 samples in batches of 4: 16 steps, 8 of linear warm-up from 1e-5, then a cosine from 1e-2 to 1e-4
    train(*from_flat(dict(model="bav2_resnet20", data="synthetic:64", img_size=16, batch_size=4, epochs=1, lr=1e-2,
                          warmup_epochs=0.5, warmup_prefix=True, warmup_lr=1e-5, min_lr=1e-4, workers=0, progress=False,
                          output=str(tmp_path / "run"))))
    curves = next(fig for fig in figures if len(fig.axes) == 3)
    for ax in curves.axes:
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == [0.0, 1.0]
    (line,) = curves.axes[2].get_lines()
    epochs, lrs = line.get_xdata().tolist(), line.get_ydata().tolist()
    assert len(epochs) == 17 and epochs[:3] == [0.0, 1 / 16, 2 / 16] and epochs[-1] == 1  # every step, then the end
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(1e-5) and epochs[peak] == 0.5 and lrs[peak] == pytest.approx(1e-2, rel=1e-3)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # the warm-up rises step by step
    assert all(a > b for a, b in zip(lrs[peak:-1], lrs[peak + 1:]))  # the cosine falls
