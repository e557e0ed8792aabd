"""The mistakes that matter in a split: the class pairs the model confuses most, and its top losses.

``vitkit run`` (test split) and ``vitkit eval`` write them into ``report_<split>.json``
(``confused_pairs``, ``top_losses``), ``confused.png`` (a row of examples per pair) and ``top_losses.png``
(image, given label, prediction, probability, loss), and print the pairs as a table. The probabilities
are the calibrated ones (``predict``'s); an image's loss is ``-log p(given label)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from vitkit.data import ImageSet
from vitkit.data.datasets import DataSplits
from vitkit.engine.console import console
from vitkit.evaluation.evaluate import Evaluation

MAX_PAIRS = 10  # pairs listed in the report
GRID_PAIRS = 6  # pairs drawn in confused.png, one row each
EXAMPLES_PER_PAIR = 4
TOP_LOSSES = 32


@dataclass
class ConfusedPair:
    """Images of class ``true`` predicted as ``predicted``: how many, and which (most confident first)."""

    true: int
    predicted: int
    count: int
    indices: list[int]


def split_names(data: DataSplits, name: str) -> list[str] | None:
    """The files of split ``name`` in order, relative to the data root as ``split.json`` records them
    (imagefolder runs); ``None`` for in-memory datasets."""
    record = data.split_record
    return None if record is None or name not in record else [path for path, _ in record[name]]


def example_name(names: Sequence[str] | None, index: int, name: str) -> str:
    """Image ``index`` of a split as the user finds it: its file (``split_names``), or ``<split>[index]``."""
    return names[index] if names is not None else f"{name}[{index}]"


def confused_pairs(result: Evaluation, matrix: torch.Tensor, limit: int = MAX_PAIRS) -> list[ConfusedPair]:
    """The ``limit`` most frequent (true, predicted) confusions of a confusion matrix, largest first, each
    with its images ordered by the probability given to the wrong class."""
    counts = torch.as_tensor(matrix).clone()
    counts.fill_diagonal_(0)
    flat = counts.flatten()
    order = sorted(range(len(flat)), key=lambda i: (-int(flat[i]), i))
    pairs = []
    n = counts.shape[0]
    for i in order[:limit]:
        if int(flat[i]) == 0:
            break
        true, predicted = divmod(i, n)
        where = ((result.targets == true) & (result.predictions == predicted)).nonzero().flatten()
        where = where[result.probabilities[where, predicted].argsort(descending=True)]
        pairs.append(ConfusedPair(true, predicted, int(flat[i]), where.tolist()))
    return pairs


def top_losses(result: Evaluation, k: int = TOP_LOSSES) -> tuple[list[int], torch.Tensor]:
    """Indices of the ``k`` images with the highest ``-log p(given label)``, highest first, and every loss."""
    p_true = result.probabilities.gather(1, result.targets.long()[:, None])[:, 0].double()
    losses = -p_true.clamp(min=1e-12).log()
    return losses.argsort(descending=True)[:k].tolist(), losses


def print_pairs(pairs: Sequence[ConfusedPair], classes: Sequence[str], title: str) -> None:
    if not pairs:
        console.print(f"{title}: no class confused with another")
        return
    table = Table(title=title)
    for column in ("true class", "predicted as", "images"):
        table.add_column(column, justify="right" if column == "images" else "left")
    for pair in pairs:
        table.add_row(classes[pair.true], classes[pair.predicted], str(pair.count))
    console.print(table)


def write_mistakes(
    out_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    matrix: torch.Tensor,
    name: str = "test",
    plots: bool = True,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Print the most confused pairs; with ``plots`` write ``confused<suffix>.png`` and
    ``top_losses<suffix>.png``; returns both lists for ``report_<name>.json``, images named by ``names``
    (``split_names``) or by their index."""
    pairs = confused_pairs(result, matrix)
    print_pairs(pairs, classes, f"{title}: {name} split, most confused class pairs")
    order, losses = top_losses(result)
    report = {
        "confused_pairs": [
            {
                "true": classes[p.true],
                "predicted": classes[p.predicted],
                "count": p.count,
                "examples": [example_name(names, i, name) for i in p.indices[:EXAMPLES_PER_PAIR]],
            }
            for p in pairs
        ],
        "top_losses": [
            {
                "example": example_name(names, i, name),
                "given": classes[int(result.targets[i])],
                "predicted": classes[int(result.predictions[i])],
                "probability": float(result.probabilities[i, result.predictions[i]]),
                "loss": float(losses[i]),
            }
            for i in order
        ],
    }
    if plots:
        suffix = "" if name == "test" else f"_{name}"
        from vitkit.viz import plot_grid

        plot_grid(
            _loss_panels(result, split, classes, order, losses),
            Path(out_dir) / f"top_losses{suffix}.png",
            f"{title}: top losses of the {name} split (given label, prediction, probability, loss)",
        )
        plot_grid(
            _pair_panels(
                result, split, classes, pairs[:GRID_PAIRS], [example_name(names, i, name) for i in range(result.count)]
            ),
            Path(out_dir) / f"confused{suffix}.png",
            f"{title}: most confused class pairs of the {name} split (one row each, true -> predicted)",
            EXAMPLES_PER_PAIR,
        )
    return report


def _loss_panels(
    result: Evaluation, split: ImageSet, classes: Sequence[str], order: Sequence[int], losses: torch.Tensor
) -> list[Any]:
    from vitkit.viz import GREEN, RED, Panel

    panels = []
    for i in order:
        pred, true = int(result.predictions[i]), int(result.targets[i])
        prob = float(result.probabilities[i, pred])
        text = f"given {classes[true]}\n{classes[pred]} ({prob:.0%}), loss {float(losses[i]):.2f}"
        panels.append(Panel(split.picture(i), text, GREEN if pred == true else RED))
    return panels


def _pair_panels(
    result: Evaluation, split: ImageSet, classes: Sequence[str], pairs: Sequence[ConfusedPair], names: Sequence[str]
) -> list[Any]:
    import numpy as np

    from vitkit.viz import RED, Panel

    panels = []
    for pair in pairs:
        shown = pair.indices[:EXAMPLES_PER_PAIR]
        for i in shown:
            prob = float(result.probabilities[i, pair.predicted])
            where = Path(names[i]).name
            text = f"{classes[pair.true]} -> {classes[pair.predicted]} ({prob:.0%})\n{where}"
            panels.append(Panel(split.picture(i), text, RED))
        blank = np.ones((8, 8))
        panels += [Panel(blank, "") for _ in range(EXAMPLES_PER_PAIR - len(shown))]
    return panels
