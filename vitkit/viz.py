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


def fit_text(text: str, width: float, font: Any, renderer: Any, wrap: bool = True) -> str:
    """``text`` with each line broken at spaces (``wrap``) or cut short in the middle with "…" so it is at most
    ``width`` pixels wide when drawn in ``font`` (a ``FontProperties``) by ``renderer``."""

    def fits(line: str) -> bool:
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0] <= width

    def cut(line: str) -> str:  # from the middle: a file name's suffix and a caption's "(93%)" stay
        keep = len(line) - 1
        while keep > 1 and not fits(line[: (keep + 1) // 2] + "…" + line[len(line) - keep // 2 :]):
            keep -= 1
        return line[: (keep + 1) // 2] + "…" + line[len(line) - keep // 2 :]

    out = []
    for line in text.split("\n"):
        if fits(line):
            out.append(line)
        elif not wrap:
            out.append(cut(line))
        else:
            current = ""
            for word in line.split(" "):
                joined = f"{current} {word}" if current else word
                if fits(joined):
                    current = joined
                    continue
                if current:
                    out.append(current)
                current = word if fits(word) else cut(word)
            out.append(current)
    return "\n".join(out)


def fit_titles(fig: Any) -> Any:
    """Wrap the titles of ``fig``'s axes so each lies inside the figure (centred over its axes as the
    layout placed them); the figure's constrained layout then makes room for their height."""
    originals = {ax: ax.get_title() for ax in fig.axes if ax.get_title()}
    for _ in range(4):  # a wrapped title changes the layout, which can move the axes: until it settles
        fig.canvas.draw()  # the layout places the axes
        renderer, right, changed = fig.canvas.get_renderer(), fig.bbox.x1, False
        for ax, original in originals.items():
            box = ax.get_window_extent(renderer)
            centre = (box.x0 + box.x1) / 2
            room = 2 * min(centre - fig.bbox.x0, right - centre) - 8
            text = fit_text(original, room, ax.title.get_fontproperties(), renderer)
            changed |= text != ax.get_title()
            ax.set_title(text)
        if not changed:
            break
    return fig


def save(fig: Any, path: Path, **kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` (PNG) and close it."""
    fig.savefig(path, **kwargs)
    _pyplot().close(fig)
    return Path(path)


def curve_figure(
    history: Sequence[dict[str, Any]], metric: str, label: str, title: str = "", best: int | None = None
) -> Any:
    """Train vs validation ``metric`` (``loss`` or ``acc``) per epoch; the ``best`` epoch marked when given."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    for split in ("train", "val"):
        values = [row.get(f"{split}_{metric}") for row in history]
        if any(v is not None for v in values):
            ax.plot(
                epochs,
                values,
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
    return fit_titles(fig)


def plot_curves(
    history: Sequence[dict[str, Any]], out_dir: Path, title: str = "", best: int | None = None
) -> list[Path]:
    """``loss.png`` and ``accuracy.png``: train vs validation per epoch; ``best`` epoch marked when given."""
    return [
        save(curve_figure(history, metric, label, title, best), Path(out_dir) / filename)
        for metric, label, filename in (("loss", "loss", "loss.png"), ("acc", "accuracy", "accuracy.png"))
    ]


def lr_figure(history: Sequence[dict[str, Any]], title: str = "") -> Any:
    """The learning rate at the end of each epoch (as logged in ``metrics.csv``); ``None`` when none was."""
    rows = [row for row in history if row.get("lr") not in (None, "")]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110, layout="constrained")
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
    return fit_titles(fig)


def plot_lr(history: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> Path | None:
    """``lr.png``: the learning rate at the end of each epoch (as logged in ``metrics.csv``)."""
    fig = lr_figure(history, title)
    return None if fig is None else save(fig, Path(out_dir) / "lr.png")


def confusion_figure(matrix: Any, classes: Sequence[str], title: str = "") -> Any:
    """A confusion matrix (rows: true class, columns: predicted), counts written in the cells when few."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix)
    n = len(classes)
    side = min(max(4.8, 0.45 * n + 2.0), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=110, layout="constrained")
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
    return fit_titles(fig)


def plot_confusion(matrix: Any, classes: Sequence[str], path: Path, title: str = "") -> Path:
    """``confusion_figure`` saved to ``path``."""
    return save(confusion_figure(matrix, classes, title), path)


@dataclass
class Panel:
    """One grid cell: an ``(H, W)`` or ``(H, W, 3)`` image in [0, 1], a caption, its colour, an overlay."""

    image: Any
    caption: str
    color: str = "black"
    overlay: Any = None  # (H, W) in [0, 1], drawn as a heat map over the image


@dataclass
class GridLayout:
    """Where the panels went: ``rows`` x ``cols`` cells of ``panel_px`` pixels under a ``header_px`` title
    (taller when the title wraps onto more lines), each cell a ``caption_px`` caption above its image."""

    panels: int
    rows: int
    cols: int
    panel_px: int = 160
    header_px: int = 40
    caption_px: int = 32
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """The PNG's (width, height) in pixels."""
        return self.cols * self.panel_px, self.rows * self.panel_px + self.header_px


GREEN, RED = "#1a7f37", "#cf222e"
TITLE_PT, CAPTION_PT, GRID_DPI = 11, 8, 100


def grid_figure(panels: Sequence[Panel], title: str = "", cols: int | None = None) -> tuple[Any, GridLayout]:
    """Images in a grid, each with its caption above (lines cut short to the cell's width),
    under the title (wrapped to the figure's width); exact pixel size ``GridLayout.size``."""
    import numpy as np
    from matplotlib.font_manager import FontProperties

    plt = _pyplot()
    n = max(len(panels), 1)
    cols = cols or min(8, math.ceil(math.sqrt(n)))
    layout = GridLayout(len(panels), math.ceil(n / cols), cols)
    fig = plt.figure(dpi=GRID_DPI)
    renderer = fig.canvas.get_renderer()
    title_font, caption_font = FontProperties(size=TITLE_PT), FontProperties(size=CAPTION_PT)
    title = fit_text(title, layout.size[0] - 16, title_font, renderer)
    captions = [fit_text(p.caption, 0.96 * layout.panel_px - 4, caption_font, renderer, wrap=False) for p in panels]

    def line_px(font: Any) -> float:
        return 1.2 * renderer.get_text_width_height_descent("Ag", font, ismath=False)[1]

    layout.header_px = max(40, math.ceil(title.count("\n") * line_px(title_font) + line_px(title_font) + 20))
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    layout.caption_px = math.ceil(lines * line_px(caption_font) + 8)
    width, height = layout.size
    fig.set_size_inches(width / GRID_DPI, height / GRID_DPI)
    fig.suptitle(title, y=1 - 0.5 * layout.header_px / height, va="center", fontsize=TITLE_PT)
    cell, image_px = layout.panel_px, layout.panel_px - layout.caption_px - 4
    for index, (panel, caption) in enumerate(zip(panels, captions, strict=True)):
        r, c = divmod(index, cols)
        bottom = layout.header_px + r * cell + cell - 2  # pixels from the top
        ax = fig.add_axes(
            [(c * cell + 0.06 * cell) / width, 1 - bottom / height, 0.88 * cell / width, image_px / height]
        )
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
        ax.set_title(caption, color=panel.color, fontsize=CAPTION_PT, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    if not panels:
        fig.text(0.5, 0.5 * (1 - layout.header_px / height), "nothing to show", ha="center", va="center", fontsize=10)
    return fig, layout


def plot_grid(panels: Sequence[Panel], path: Path, title: str = "", cols: int | None = None) -> GridLayout:
    """``grid_figure`` saved to ``path``; returns where the panels went."""
    fig, layout = grid_figure(panels, title, cols)
    layout.path = save(fig, path, dpi=GRID_DPI)
    return layout


def reliability_figure(curves: dict[str, Any], title: str = "") -> Any:
    """A reliability diagram: per confidence bin, accuracy against mean confidence (the diagonal is
    perfect calibration), one line per entry of ``curves`` (label -> ``calibration.Reliability``, its ECE
    in the legend), and below it the images per bin."""
    import numpy as np

    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.6, 5.6), dpi=110, layout="constrained", sharex=True, height_ratios=(3, 1)
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    bins = len(next(iter(curves.values())).counts) if curves else 15
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = 1.0 / bins / max(len(curves), 1)
    for k, (label, rel) in enumerate(curves.items()):
        filled = rel.counts.numpy() > 0
        conf, acc = rel.confidence.numpy()[filled], rel.accuracy.numpy()[filled]
        ax.plot(conf, acc, marker="o", markersize=4, label=f"{label} (ECE {rel.ece:.3f})")
        hist.bar(edges[:-1] + k * width, rel.counts.numpy(), width=width, align="edge", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} — reliability ({bins} confidence bins)" if title else f"reliability ({bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("top-1 confidence")
    hist.set_ylabel("images")
    hist.grid(alpha=0.3)
    return fit_titles(fig)


def plot_reliability(curves: dict[str, Any], path: Path, title: str = "") -> Path:
    """``reliability_figure`` saved to ``path``."""
    return save(reliability_figure(curves, title), path)
