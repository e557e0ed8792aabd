"""Plots (matplotlib, Agg backend): training and LR curves, confusion matrix, image grids; saved as PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    fig.savefig(path, **kwargs)
    _pyplot().close(fig)
    return Path(path)


def plot_curves(
    history: Sequence[dict[str, Any]], out_dir: Path, title: str = "", best: int | None = None
) -> list[Path]:
    """``loss.png`` and ``accuracy.png``: train vs validation per epoch; ``best`` epoch marked when given."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    written = []
    for metric, label, filename in (("loss", "loss", "loss.png"), ("acc", "accuracy", "accuracy.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for split, style in (("train", "-"), ("val", "-")):
            values = [row.get(f"{split}_{metric}") for row in history]
            if any(v is not None for v in values):
                ax.plot(
                    epochs,
                    values,
                    style,
                    marker="o" if len(epochs) < 30 else None,
                    markersize=3,
                    label="train" if split == "train" else "validation",
                )
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{title} — {label}" if title else label)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(out_dir) / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def plot_lr(history: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> Path | None:
    """``lr.png``: the learning rate at the end of each epoch (as logged in ``metrics.csv``)."""
    rows = [row for row in history if row.get("lr") not in (None, "")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    epochs = [int(row["epoch"]) for row in rows]
    ax.plot(
        epochs,
        [float(row["lr"]) for row in rows],
        marker="o" if len(rows) < 30 else None,
        markersize=3,
        label="learning rate (end of epoch)",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{title} — learning rate" if title else "learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(out_dir) / "lr.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(matrix: Any, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells when few."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix)
    n = len(classes)
    side = min(max(4.8, 0.45 * n + 2.0), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=110)
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="images")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
        ax.set_yticks(range(n), classes)
    if n <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(
                    j,
                    i,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > threshold else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} — confusion matrix (accuracy {accuracy:.3f}, {counts.sum()} images)".lstrip(" —"))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


@dataclass
class Panel:
    """One grid cell: an ``(H, W)`` or ``(H, W, 3)`` image in [0, 1], a caption, its colour, an overlay."""

    image: Any
    caption: str
    color: str = "black"
    overlay: Any = None  # (H, W) in [0, 1], drawn as a heat map over the image


@dataclass
class GridLayout:
    """Where the panels went: ``rows`` x ``cols`` cells of ``panel_px`` pixels under a ``header_px`` title."""

    path: Path
    panels: int
    rows: int
    cols: int
    panel_px: int = 160
    header_px: int = 40

    @property
    def size(self) -> tuple[int, int]:
        """The PNG's (width, height) in pixels."""
        return self.cols * self.panel_px, self.rows * self.panel_px + self.header_px


GREEN, RED = "#1a7f37", "#cf222e"


def plot_grid(panels: Sequence[Panel], path: Path, title: str = "", cols: int | None = None) -> GridLayout:
    """Images in a grid, each with its caption above; exact pixel size ``GridLayout.size``."""
    import numpy as np

    plt = _pyplot()
    n = max(len(panels), 1)
    cols = cols or min(8, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    layout = GridLayout(Path(path), len(panels), rows, cols)
    dpi = 100
    width, height = layout.size
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.suptitle(title, y=1 - 0.5 * layout.header_px / height, va="center", fontsize=11)
    top = 1 - layout.header_px / height
    for index, panel in enumerate(panels):
        r, c = divmod(index, cols)
        # axes box in figure fractions, inside the cell, leaving room for a two-line caption above
        ax = fig.add_axes([(c + 0.06) / cols, top - (r + 0.97) * (top / rows), 0.88 / cols, 0.72 * top / rows])
        image = np.asarray(panel.image, dtype=np.float32)
        grey = image.ndim == 2 or image.shape[-1] == 1
        small = max(image.shape[:2]) < 64
        ax.imshow(
            image.squeeze(-1) if image.ndim == 3 and grey else image,
            cmap="gray" if grey else None,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest" if small else "antialiased",
        )
        if panel.overlay is not None:
            ax.imshow(np.asarray(panel.overlay), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0, interpolation="bilinear")
        ax.set_title(panel.caption, color=panel.color, fontsize=8, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    if not panels:
        fig.text(0.5, 0.5 * top, "nothing to show", ha="center", va="center", fontsize=10)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return layout
