"""Every figure of the package is made with :func:`figure` (matplotlib's ``Figure``, never pyplot: no backend switch,
no figure registry) and written with :func:`save`; the engine's own are the training curves and confusion matrix."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure", "integer_epochs", "plot_confusion", "plot_curves", "save"]


def figure(figsize: tuple[float, float], dpi: float = 100, nrows: int = 1, ncols: int = 1) -> tuple[Figure, Any]:
    """A detached figure and its axes (``Figure.subplots(nrows, ncols)``: one ``Axes`` or an array of them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols)


def save(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write ``fig`` as PNG at ``path`` (atomically: a reader never sees a half-written file)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi or fig.dpi))
    return Path(path)


def integer_epochs(ax: Any, epochs: int | None = None) -> None:
    """Epoch axes tick at whole epochs only (a short run otherwise shows 1.25, 1.5, ...); with ``epochs`` the axis
    spans 0 .. epochs, so a one-epoch run still has two whole epochs to tick."""
    from matplotlib.ticker import MaxNLocator

    if epochs:
        ax.set_xlim(-0.05 * epochs, 1.05 * epochs)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_curves(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss (train, val), accuracy (top-1, top-5, EMA top-1) per epoch and the learning rate per step, side by side."""
    epochs = [r["epoch"] for r in history]
    fig, axes = figure((13, 3.6), ncols=3)
    panels = [("loss", [("train_loss", "train"), ("loss", "val")]),
              ("accuracy (%)", [("top1", "top-1"), ("top5", "top-5"), ("ema_top1", "EMA top-1")])]
    for ax, (label, series) in zip(axes, panels):
        for key, name in series:
            values = [r.get(key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", ms=3, label=name)
        ax.set_ylabel(label)
        ax.legend()
    # each epoch's recorded steps (``lr_curve``, at fractions of an epoch), then its end-of-epoch value
    lr_points = [(at, lr) for r in history for at, lr in [*r.get("lr_curve", []), (r["epoch"], r.get("lr"))]
                 if lr is not None]
    axes[2].plot(*zip(*lr_points), label="lr")  # nothing to draw for a history without lr
    axes[2].set_ylabel("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        integer_epochs(ax, max(epochs, default=0))
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path, dpi=110)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row); class names shown up to 30 classes."""
    import numpy as np

    matrix = np.asarray(confusion, dtype=np.float64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(matrix)
    size = min(12.0, 3.0 + 0.45 * n)
    fig, ax = figure((size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        if n <= 15:
            for i, j in zip(*matrix.nonzero()):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return save(fig, path, dpi=110)
