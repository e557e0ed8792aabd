"""The evaluation report of a split: per-class precision/recall/F1, confusion matrix, example grids,
the mistakes that matter (``evaluation.mistakes``) and calibration (``evaluation.calibration``).

Written by ``vitkit eval`` and at the end of ``vitkit run`` into the run directory: ``confusion.png``,
``misclassified.png``, ``predictions.png``, ``confused.png``, ``top_losses.png``, ``reliability.png`` and
``report_<split>.json`` (files of the val split carry a ``_val`` suffix), printed as rich tables. The
probabilities shown are the calibrated ones (``softmax(logits / T)``, what ``predict`` gives).
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
from vitkit.evaluation.evaluate import Evaluation

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
            Panel(split.picture(i), caption(classes[pred], prob, classes[true]), GREEN if pred == true else RED)
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
    temperature: float = 1.0,
    extra: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Per-class table (printed), ``report_<name>.json`` and, with ``plots``, the confusion, example, mistake
    and reliability plots; ``temperature``: the run's (probabilities shown calibrated by it); ``extra``:
    more entries for the JSON (test-time augmentation's accuracy, say); ``names``: the split's files
    (``mistakes.split_names``), to name the examples of mistakes. Multi-label results:
    ``vitkit.evaluation.multilabel_report`` at the per-class ``thresholds``."""
    from vitkit.evaluation.mistakes import write_mistakes

    out_dir = Path(out_dir)
    if result.multi_label:
        from vitkit.evaluation.multilabel_report import write_multilabel_report

        return write_multilabel_report(out_dir, title, result, classes, name, thresholds)
    suffix = "" if name == "test" else f"_{name}"
    calibration = write_calibration(out_dir, title, result, name, temperature, plots)
    result = result.with_temperature(temperature)
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
        **({"calibration": calibration} if calibration else {}),
        **(extra or {}),
    }
    report.update(write_mistakes(out_dir, title, result, split, classes, matrix, name, plots, names))
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
    written = [f"{what}{suffix}.png" for what in ("confusion", "misclassified", "predictions", "confused")]
    written += [f"top_losses{suffix}.png"] + [f"reliability{suffix}.png"] * bool(calibration)
    console.print(f"wrote {', '.join(written)} and report_{name}.json to {out_dir}")
    return report


def write_calibration(
    out_dir: Path, title: str, result: Evaluation, name: str, temperature: float, plots: bool = True
) -> dict[str, Any] | None:
    """ECE and NLL of a split before and after ``temperature`` (``calibration.calibration_report``) and, with
    ``plots``, its reliability diagram ``reliability<suffix>.png``; ``None`` without logits."""
    if result.logits is None:
        return None
    from vitkit.evaluation.calibration import calibrated, calibration_report, reliability

    report = calibration_report(result.logits, result.targets, temperature)
    if plots:
        from vitkit.viz import plot_reliability

        curves = {"uncalibrated": reliability(calibrated(result.logits, 1.0), result.targets)}
        curves[f"temperature {temperature:.3g}"] = reliability(calibrated(result.logits, temperature), result.targets)
        suffix = "" if name == "test" else f"_{name}"
        plot_reliability(curves, Path(out_dir) / f"reliability{suffix}.png", f"{title}, {name}")
    return report


def write_run_report(
    run_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    history: Sequence[dict[str, Any]],
    plots: bool = True,
    temperature: float = 1.0,
    val: Evaluation | None = None,
    names: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """What ``vitkit run`` adds at its end: the test split's report, ``lr.png`` and, given the ``val``
    evaluation, its calibration (``reliability_val.png``; returned as ``val_calibration``)."""
    if plots:
        from vitkit.viz import plot_lr

        plot_lr(history, run_dir, title)
    val_calibration = (
        None if val is None or val.multi_label else write_calibration(run_dir, title, val, "val", temperature, plots)
    )
    report = write_report(run_dir, title, result, split, classes, "test", plots, temperature, None, names, thresholds)
    return {**report, "val_calibration": val_calibration}


def write_eval_report(
    out_dir: Path,
    title: str,
    result: Evaluation,
    split: ImageSet,
    classes: Sequence[str],
    name: str = "test",
    temperature: float = 1.0,
    extra: dict[str, Any] | None = None,
    names: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """What ``vitkit eval`` adds: the split's report, and ``lr.png`` again from the run's ``metrics.csv``."""
    import csv

    metrics = Path(out_dir) / "metrics.csv"
    if metrics.is_file():
        from vitkit.viz import plot_lr

        with open(metrics, newline="") as f:
            plot_lr(list(csv.DictReader(f)), out_dir, title)
    return write_report(out_dir, title, result, split, classes, name, True, temperature, extra, names, thresholds)
