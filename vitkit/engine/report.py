"""The evaluation report of a split: per-class precision/recall/F1, confusion matrix, example grids.

Written by ``vitkit eval`` and at the end of ``vitkit run`` into the run directory: ``confusion.png``,
``misclassified.png``, ``predictions.png`` and ``report_<split>.json`` (files of the val split carry a
``_val`` suffix), printed as rich tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from vitkit.data import ImageSet
from vitkit.engine.console import console
from vitkit.engine.evaluate import Evaluation

MAX_TABLE_CLASSES = 20  # more classes: the table shows the worst ones by F1
GRID_IMAGES = 32


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(classes, classes)`` counts; rows are true classes, columns predicted ones (``sklearn.metrics``)."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    labels = list(range(num_classes))
    return torch.as_tensor(sk_confusion_matrix(targets.cpu().numpy(), predictions.cpu().numpy(), labels=labels))


def class_metrics(matrix: torch.Tensor, classes: Sequence[str]) -> list[dict[str, Any]]:
    """Per class: precision, recall, F1 and support (true images) from a confusion matrix
    (``sklearn.metrics.precision_recall_fscore_support``; 0 where a class is never predicted or true)."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    counts = torch.as_tensor(matrix).long().cpu().numpy()
    n = len(classes)
    # the (true, predicted) pairs the matrix counts, each repeated by its count
    pairs = np.repeat(np.arange(n * n), counts.reshape(-1))
    true, predicted = pairs // n, pairs % n
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=list(range(n)), zero_division=0
    )
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]


def macro_average(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Precision, recall and F1 averaged over every class, unweighted (sklearn's ``average="macro"``)."""
    return {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in ("precision", "recall", "f1")}


def split_image(split: ImageSet, index: int) -> Any:
    """Image ``index`` of a split as a numpy ``(H, W)`` or ``(H, W, 3)`` array in [0, 1], for plotting."""
    image = split.images[index] if split.in_memory else split.files[index][0]
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    image = image.clamp(0, 1).permute(1, 2, 0).numpy()
    return image[..., 0] if image.shape[-1] == 1 else image


def caption(predicted: str, probability: float, true: str | None) -> str:
    text = f"{predicted} ({probability:.0%})"
    return text if true is None or true == predicted else f"{text}\ntrue: {true}"


def example_panels(result: Evaluation, split: ImageSet, classes: Sequence[str], indices: Sequence[int]) -> list[Any]:
    """Grid panels for split images ``indices``: predicted label and probability, green when right."""
    from vitkit.viz import GREEN, RED, Panel

    panels = []
    for i in indices:
        pred, true = int(result.predictions[i]), int(result.targets[i])
        prob = float(result.probabilities[i, pred])
        panels.append(
            Panel(split_image(split, i), caption(classes[pred], prob, classes[true]), GREEN if pred == true else RED)
        )
    return panels


def print_class_table(rows: list[dict[str, Any]], title: str) -> None:
    shown = rows
    if len(rows) > MAX_TABLE_CLASSES:
        shown = sorted(rows, key=lambda r: r["f1"])[:10]
        title += f" (10 worst of {len(rows)} classes by F1)"
    table = Table(title=title)
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in shown:
        table.add_row(
            row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    macro = macro_average(rows)
    table.add_row(
        "[bold]macro avg[/]",
        f"{macro['precision']:.3f}",
        f"{macro['recall']:.3f}",
        f"{macro['f1']:.3f}",
        str(sum(r["support"] for r in rows)),
        end_section=True,
    )
    console.print(table)


def write_report(
    out_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    name: str = "test",
    plots: bool = True,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Per-class table (printed), ``report_<name>.json`` and, with ``plots``, the confusion and example grids.
    Multi-label results: ``vitkit.engine.multilabel_report`` at the per-class ``thresholds``."""
    out_dir = Path(out_dir)
    if result.multi_label:
        from vitkit.engine.multilabel_report import write_multilabel_report

        return write_multilabel_report(out_dir, title, result, classes, name, thresholds)
    suffix = "" if name == "test" else f"_{name}"
    matrix = confusion_matrix(result.predictions, result.targets, len(classes))
    rows = class_metrics(matrix, classes)
    print_class_table(rows, f"{title}: {name} split, per class")
    report = {
        "split": name,
        "count": result.count,
        "acc": result.acc,
        "top5": result.top5,
        "loss": result.loss,
        "macro": macro_average(rows),
        "per_class": rows,
        "confusion": matrix.tolist(),
    }
    (out_dir / f"report_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not plots:
        return report
    from vitkit.viz import plot_confusion, plot_grid

    plot_confusion(matrix, classes, out_dir / f"confusion{suffix}.png", f"{title}, {name}")
    wrong = (result.predictions != result.targets).nonzero().flatten()
    confidence = result.probabilities[wrong, result.predictions[wrong]]
    worst = wrong[confidence.argsort(descending=True)][:GRID_IMAGES].tolist()
    plot_grid(
        example_panels(result, split, classes, worst),
        out_dir / f"misclassified{suffix}.png",
        f"{title}: {len(wrong)} of {result.count} {name} images misclassified (most confident first)",
    )
    step = max(1, result.count // GRID_IMAGES)
    sample = list(range(0, result.count, step))[:GRID_IMAGES]
    plot_grid(
        example_panels(result, split, classes, sample),
        out_dir / f"predictions{suffix}.png",
        f"{title}: {name} predictions (green right, red wrong)",
    )
    written = [f"confusion{suffix}.png", f"misclassified{suffix}.png", f"predictions{suffix}.png"]
    console.print(f"wrote {', '.join(written)} and report_{name}.json to {out_dir}")
    return report


def write_run_report(
    run_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    history: Sequence[dict[str, Any]],
    plots: bool = True,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """What ``vitkit run`` adds at its end: the test split's report and ``lr.png``."""
    if plots:
        from vitkit.viz import plot_lr

        plot_lr(history, run_dir, title)
    return write_report(run_dir, title, result, split, classes, "test", plots, thresholds)


def write_eval_report(
    out_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    name: str = "test",
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """What ``vitkit eval`` adds: the split's report, and ``lr.png`` again from the run's ``metrics.csv``."""
    import csv

    metrics = Path(out_dir) / "metrics.csv"
    if metrics.is_file():
        from vitkit.viz import plot_lr

        with open(metrics, newline="") as f:
            plot_lr(list(csv.DictReader(f)), out_dir, title)
    return write_report(out_dir, title, result, split, classes, name, thresholds=thresholds)
