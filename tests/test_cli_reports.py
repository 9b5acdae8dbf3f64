"""What the reports say and show: eval's stored accuracy and its subset, whole-epoch ticks, results.png's bubbles
and legend, Grad-CAM titles that name the prediction and file names that keep the class folder."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bridgeattn.cli.main import main
from bridgeattn.engine import plotting


@pytest.fixture
def figures(monkeypatch) -> list:
    """The figures the package saves, kept for inspection (still written)."""
    kept, save = [], plotting.save

    def keep(fig, path, dpi=None):
        kept.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr(plotting, "save", keep)
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
    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
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
