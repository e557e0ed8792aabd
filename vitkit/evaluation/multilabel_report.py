"""The report of a multi-label split: mAP, per-class AP/precision/recall/F1 at per-class thresholds, exact match.

Thresholds are chosen per class on the val split (``choose_thresholds``: the one with the best F1 there)
and applied unchanged to test, so the test numbers are honest; ``vitkit predict`` prints every label
above its threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from vitkit.engine.console import console
from vitkit.evaluation.evaluate import Evaluation

DEFAULT_THRESHOLD = 0.5  # a class without positives in val keeps it


def choose_thresholds(probabilities: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Per class, the probability threshold with the best F1 on these (val) images: the midpoint
    below the best-scoring cut of the sorted probabilities; 0.5 for a class with no positive image."""
    out = []
    for c in range(probabilities.shape[1]):
        scores, truth = probabilities[:, c].double(), targets[:, c] > 0
        positives = int(truth.sum())
        if positives == 0:
            out.append(DEFAULT_THRESHOLD)
            continue
        order = scores.argsort(descending=True)
        s, t = scores[order], truth[order].double()
        tp = t.cumsum(0)
        f1 = 2 * tp / (torch.arange(1, len(s) + 1, dtype=torch.float64) + positives)  # predict the top k
        k = int(f1.argmax())
        below = float(s[k + 1]) if k + 1 < len(s) else 0.0
        out.append((float(s[k]) + below) / 2)
    return out


def class_rows(
    probabilities: torch.Tensor, targets: torch.Tensor, thresholds: Sequence[float], classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Per class: average precision (``sklearn.metrics.average_precision_score``; ``None`` without
    positives), precision, recall and F1 at its threshold, the threshold and the support."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    truth = (targets > 0).long().numpy()
    predicted = (probabilities >= torch.tensor(thresholds)).long().numpy()
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    rows = []
    for c, name in enumerate(classes):
        ap = float(average_precision_score(truth[:, c], probabilities[:, c].numpy())) if truth[:, c].any() else None
        rows.append(
            {
                "class": name,
                "ap": ap,
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "threshold": float(thresholds[c]),
                "support": int(support[c]),
            }
        )
    return rows


def multilabel_metrics(
    result: Evaluation, thresholds: Sequence[float] | None, classes: Sequence[str]
) -> dict[str, Any]:
    """mAP (over classes with a positive image), macro precision/recall/F1, exact match (every label of
    an image right) at ``thresholds`` (default 0.5 each), and the per-class rows."""
    thresholds = list(thresholds) if thresholds is not None else [DEFAULT_THRESHOLD] * len(classes)
    rows = class_rows(result.probabilities, result.targets, thresholds, classes)
    aps = [r["ap"] for r in rows if r["ap"] is not None]
    predicted = result.probabilities >= torch.tensor(thresholds)
    exact = (predicted == (result.targets > 0)).all(dim=1).float().mean()
    return {
        "map": sum(aps) / max(len(aps), 1),
        "exact_match": float(exact) if result.count else 0.0,
        "macro": {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in ("precision", "recall", "f1")},
        "thresholds": thresholds,
        "per_class": rows,
    }


def write_multilabel_report(
    out_dir: Path, title: str, result: Evaluation, classes: Sequence[str], name: str, thresholds: Sequence[float] | None
) -> dict[str, Any]:
    """Print the per-class table and write ``report_<name>.json``; returns the report."""
    metrics = multilabel_metrics(result, thresholds, classes)
    table = Table(title=f"{title}: {name} split, per class (multi-label)")
    for column in ("class", "AP", "precision", "recall", "F1", "threshold", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for r in metrics["per_class"]:
        ap = "-" if r["ap"] is None else f"{r['ap']:.3f}"
        cells = (f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", f"{r['threshold']:.3f}")
        table.add_row(r["class"], ap, *cells, str(r["support"]))
    console.print(table)
    console.print(f"{name}: mAP {metrics['map']:.4f}  exact match {metrics['exact_match']:.4f}")
    report = {
        "split": name,
        "multi_label": True,
        "count": result.count,
        "loss": result.loss,
        "map": metrics["map"],
        "exact_match": metrics["exact_match"],
        "macro": metrics["macro"],
        "thresholds": metrics["thresholds"],
        "per_class": metrics["per_class"],
    }
    (Path(out_dir) / f"report_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
