"""Figures keep their titles inside the figure: prediction grids of any size, curves, confusion matrix,
LR range test, compare curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vitkit.commands.compare.report import overlaid_figure
from vitkit.engine.lr_finder import LRFindResult, lr_find_figure, suggest
from vitkit.viz import GREEN, RED, Panel, confusion_figure, curve_figure, grid_figure, lr_figure, plot_grid

# titles as predict and the run report write them (the longest model and data names seen in recipes/)
GRID_TITLES = (
    "vit_small_patch16_224: predictions",
    "my_photos: 2 of 180 test images misclassified (most confident first)",
    "vit_small_patch16_224: predictions and attention (rollout, last layer), first 64 of 250",
)


def _inside(box, fig) -> bool:
    outer = fig.bbox
    return (
        outer.x0 - 0.5 <= box.x0 and box.x1 <= outer.x1 + 0.5 and outer.y0 - 0.5 <= box.y0 and box.y1 <= outer.y1 + 0.5
    )


def _panels(n: int) -> list[Panel]:
    rng = np.random.default_rng(0)
    captions = ("…_of_a_golden_retriever.jpg\ngolden_retriever (93%)", "cat.jpg\ntabby (51%)\ntrue: egyptian_mau")
    return [Panel(rng.random((32, 32, 3)), captions[i % 2], (GREEN, RED)[i % 2]) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 7, 24])
@pytest.mark.parametrize("title", GRID_TITLES)
def test_i23_7_grid_titles_and_captions_lie_inside_the_figure(n, title, tmp_path):
    fig, layout = grid_figure(_panels(n), title)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    suptitle = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    assert _inside(suptitle, fig), (suptitle, fig.bbox)
    captions = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert all(_inside(box, fig) for box in captions), captions
    assert suptitle.y0 >= max(box.y1 for box in captions)  # the title above the first row's captions
    assert fig.canvas.get_width_height() == layout.size
    # as written: no ink in the outermost pixel columns (a clipped title or caption runs into them)
    path = plot_grid(_panels(n), tmp_path / "grid.png", title).path
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("L"))
    assert pixels.shape == (layout.size[1], layout.size[0])
    assert pixels[:, :2].min() > 240 and pixels[:, -2:].min() > 240, "ink at the figure's edge: a title is clipped"


def _history(epochs: int) -> list[dict[str, float]]:
    return [
        {"epoch": e, "train_loss": 2 / e, "val_loss": 2.1 / e, "train_acc": 1 - 1 / (e + 1), "val_acc": 0.9, "lr": 1e-3}
        for e in range(1, epochs + 1)
    ]


def _lr_find_result() -> LRFindResult:
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    losses = [2.3 - 1 / (1 + math.exp(-3 * (math.log10(lr) + 3))) for lr in lrs]
    result = LRFindResult(lrs, losses, losses, 100, lrs[0], lrs[-1], recipe_lr=2e-3)
    result.points = suggest(lrs, losses, 100)
    return result


def test_i23_7_plot_titles_lie_inside_the_figure():
    long = "my_photos_with_a_rather_long_recipe_name, test split of the cats_and_dogs_v2 folder"
    many = [f"class_{i:02d}_with_a_long_name" for i in range(25)]
    figures = {
        "loss.png": curve_figure(_history(3), "loss", "loss", long, best=2),
        "lr.png": lr_figure(_history(3), long),
        "confusion.png, 3 classes": confusion_figure(np.eye(3, dtype=int) * 5, ["cat", "dog", "fox"], long),
        "confusion.png, 25 classes": confusion_figure(np.eye(25, dtype=int), many, long),
        "lr_find.png": lr_find_figure(_lr_find_result(), long),
        "compare_accuracy.png": overlaid_figure(
            {"softmax": [_history(3), _history(3)], "linear": [_history(3)]}, "acc", "accuracy"
        ),
    }
    for name, fig in figures.items():
        assert fig.get_layout_engine() is not None, name  # laid out with the titles' room made
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if ax.get_title():
                box = ax.title.get_window_extent(renderer)
                assert _inside(box, fig), (name, box, fig.bbox)
                assert box.y0 >= ax.get_window_extent(renderer).y1, name  # above its axes, not over them
