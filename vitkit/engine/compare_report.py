"""The comparison's outputs: a rich table, ``compare.csv``, ``compare.json`` and overlaid curves."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from vitkit.engine.compare import RANK_METRICS
from vitkit.engine.console import console

COLUMNS = [
    "rank",
    "name",
    "model",
    "params",
    "gflops",
    "gmacs",
    "train_img_per_s",
    "infer_img_per_s",
    "best_val_acc",
    "test_acc",
    "wall_time_s",
    "epochs",
    "device",
    "run_dir",
]
ACCURACIES = ("test_acc", "best_val_acc")


def verdict(rows: list[dict[str, Any]], metric: str) -> str:
    """One sentence: which variant is best by ``metric``, and by how much over the runner-up."""
    best = rows[0]
    if len(rows) == 1:
        return f"only one variant: {best['name']} ({metric} {best[metric]:.4g})"
    second = rows[1]
    if metric in ACCURACIES:
        margin = f"{100 * (best[metric] - second[metric]):+.1f} points"
    elif second[metric]:
        margin = f"{best[metric] / second[metric]:.2f}x"
    else:
        margin = "n/a"
    return (
        f"best by {metric}: {best['name']} ({best[metric]:.4g}), {margin} over {second['name']} ({second[metric]:.4g})"
    )


def print_table(rows: list[dict[str, Any]], metric: str) -> None:
    table = Table(title=f"vitkit compare: ranked by {metric} ({'higher' if RANK_METRICS[metric] else 'lower'} first)")
    for header in (
        "#",
        "name",
        "params",
        "GFLOPs/img",
        "GMACs/img",
        "train img/s",
        "infer img/s",
        "best val acc",
        "test acc",
    ):
        table.add_column(header, justify="left" if header == "name" else "right")
    table.add_column("wall s", justify="right")
    for row in rows:
        table.add_row(
            str(row["rank"]),
            row["name"],
            f"{row['params'] / 1e6:.3f} M",
            f"{row['gflops']:.4f}",
            f"{row['gmacs']:.4f}",
            f"{row['train_img_per_s']:,.0f}",
            f"{row['infer_img_per_s']:,.0f}",
            f"{row['best_val_acc']:.4f}",
            f"{row['test_acc']:.4f}",
            f"{row['wall_time_s']:.1f}",
            style="bold green" if row["rank"] == 1 else None,
        )
    console.print(table)
    console.print(verdict(rows, metric))


def write_report(
    rows: list[dict[str, Any]],
    histories: dict[str, list[dict[str, float]]],
    out_dir: Path,
    metric: str,
    command: dict[str, Any],
) -> list[Path]:
    """Print the table; write ``compare.csv``, ``compare.json``, ``compare_loss.png``, ``compare_accuracy.png``."""
    print_table(rows, metric)
    with open(out_dir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in COLUMNS} for row in rows)
    report = {
        "created": datetime.now().isoformat(timespec="seconds"),
        "rank_by": metric,
        "verdict": verdict(rows, metric),
        **command,
        "rows": rows,
    }
    (out_dir / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    written = [out_dir / "compare.csv", out_dir / "compare.json", *plot_overlaid(histories, out_dir)]
    console.print(f"comparison written to {out_dir}")
    return written


def plot_overlaid(histories: dict[str, list[dict[str, float]]], out_dir: Path) -> list[Path]:
    """One colour per run: train (solid) and validation (dashed) curves over epochs."""
    from vitkit.viz import _pyplot

    plt = _pyplot()
    written = []
    for metric, label, filename in (("loss", "loss", "compare_loss.png"), ("acc", "accuracy", "compare_accuracy.png")):
        fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110)
        for i, (name, history) in enumerate(histories.items()):
            color = f"C{i % 10}"
            epochs = [row["epoch"] for row in history]
            marker = "o" if len(epochs) < 30 else None
            for split, style in (("train", "-"), ("val", "--")):
                values = [row.get(f"{split}_{metric}") for row in history]
                if all(v is not None for v in values):
                    legend = name if split == "train" else "_nolegend_"  # one entry per run: its colour
                    ax.plot(epochs, values, style, color=color, marker=marker, markersize=3, label=legend)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"compare: {label} (solid: train, dashed: validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
