"""Figures through matplotlib's object API (``matplotlib.figure.Figure``), never through pyplot.

The library draws without touching pyplot's global state: no backend switch (a Jupyter inline or GUI backend
keeps working), no figure registry to close. Every plot of the package is made with :func:`figure` and written
with :func:`save`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["figure", "save"]


def figure(figsize: tuple[float, float], dpi: float = 100, nrows: int = 1, ncols: int = 1) -> tuple[Figure, Any]:
    """A detached figure and its axes (``Figure.subplots(nrows, ncols)``: one ``Axes`` or an array of them)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols)


def save(fig: Figure, path: str | Path, dpi: float | None = None) -> Path:
    """Write ``fig`` as PNG at ``path`` (atomically: a reader never sees a half-written file)."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi or fig.dpi))
    return path
