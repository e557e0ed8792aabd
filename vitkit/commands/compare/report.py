"""The comparison's outputs: a rich table, verdicts, ``compare.csv``/``.json``, banded curves, ``compare.html``."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vitkit.commands.compare.plan import ACCURACIES, METRICS, verdicts
from vitkit.engine.console import console

COLUMNS = [
    "rank",
    "name",
    "model",
    "repeats",
    "params",
    "gflops",
    "gmacs",
    "train_img_per_s",
    "infer_img_per_s",
    "best_val_acc",
    "best_val_acc_sd",
    "best_val_acc_low",
    "best_val_acc_high",
    "test_acc",
    "test_acc_sd",
    "test_acc_low",
    "test_acc_high",
    "wall_time_s",
    "epochs",
    "device",
    "run_dir",
]


#: how the accuracy intervals are made (``vitkit.stats.describe_accuracy``), for the reports' readers
INTERVAL = "95% interval: Student-t on the logit scale, inside [0, 1]"


def verdict(rows: list[dict[str, Any]], metric: str) -> str:
    """One sentence: which variant is best by ``metric`` (mean over repeats), and by how much over the
    runner-up; each one's test accuracy beside it, for information."""
    best = rows[0]
    if len(rows) == 1:
        return f"only one variant: {best['name']} ({metric} {best[metric]:.4g}; test acc {best['test_acc']:.4f})"
    second = rows[1]
    if metric in ACCURACIES:
        margin = f"{100 * (best[metric] - second[metric]):+.1f} points"
    elif second[metric]:
        margin = f"{best[metric] / second[metric]:.2f}x"
    else:
        margin = "n/a"
    return (
        f"best by {metric}: {best['name']} ({best[metric]:.4g}; test acc {best['test_acc']:.4f}), {margin} over "
        f"{second['name']} ({second[metric]:.4g}; test acc {second['test_acc']:.4f}); test accuracy is not ranked on"
    )


def spread(row: dict[str, Any], metric: str) -> str:
    """``0.9721`` for one run, ``0.9740 ± 0.0140 [0.9167, 0.9932]`` (mean ± sd [95% interval]) for several."""
    if row["repeats"] < 2:
        return f"{row[metric]:.4f}"
    return f"{row[metric]:.4f} ± {row[metric + '_sd']:.4f} [{row[metric + '_low']:.4f}, {row[metric + '_high']:.4f}]"


def print_table(rows: list[dict[str, Any]], metric: str, lines: list[str] | None = None) -> None:
    repeats = max(row["repeats"] for row in rows)
    title = f"vitkit compare: ranked by {metric} ({'higher' if METRICS[metric] else 'lower'} first)"
    if repeats > 1:
        title += f"; mean ± sd [{INTERVAL}] over {repeats} runs each"
    table = Table(title=title)
    headers = ("#", "name", "runs", "params", "GFLOPs/img", "GMACs/img", "train img/s", "infer img/s")
    for header in (*headers, "best val acc", "test acc (not ranked on)", "wall s"):
        table.add_column(header, justify="left" if header == "name" else "right")
    for row in rows:
        table.add_row(
            str(row["rank"]),
            row["name"],
            str(row["repeats"]),
            f"{row['params'] / 1e6:.3f} M",
            f"{row['gflops']:.4f}",
            f"{row['gmacs']:.4f}",
            f"{row['train_img_per_s']:,.0f}",
            f"{row['infer_img_per_s']:,.0f}",
            spread(row, "best_val_acc"),
            spread(row, "test_acc"),
            f"{row['wall_time_s']:.1f}",
            style="bold green" if row["rank"] == 1 else None,
        )
    wide = Console(highlight=False)
    if not wide.is_terminal:  # logs and pipes: do not squeeze the table to 80 columns
        wide.width = 180
    wide.print(table)
    console.print(verdict(rows, metric))
    for line in lines or []:
        console.print(f"  {line}")
    for row in rows:
        if row.get("tuned"):
            console.print(f"  tuned {row['name']}: {tuned_values(row['tuned'])}")


def tuned_values(tuned: dict[str, Any]) -> str:
    """A variant's best values from ``--tune`` (and its study), one line."""
    values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in tuned["params"].items())
    return f"{values} (best of {tuned['trials']} trials, {tuned['study_dir']})"


def _plain(value: Any) -> Any:
    """JSON/CSV-safe: ``nan`` (no spread from one run) becomes ``None``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def write_report(
    rows: list[dict[str, Any]],
    histories: dict[str, list[list[dict[str, float]]]],
    out_dir: Path,
    metric: str,
    command: dict[str, Any],
) -> list[Path]:
    """Print the table and verdicts; write ``compare.csv``, ``compare.json``, ``compare_verdicts.txt``,
    the banded ``compare_loss.png`` and ``compare_accuracy.png``, and ``compare.html`` (all in one page)."""
    from vitkit.evaluation.html_report import write_compare_html

    kind = "folds" if command.get("folds") else "seeds"
    lines = verdicts(rows, metric, kind) if metric in ACCURACIES or max(r["repeats"] for r in rows) > 1 else []
    print_table(rows, metric, lines)
    with open(out_dir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: _plain(row[k]) for k in COLUMNS} for row in rows)
    report = {
        "created": datetime.now().isoformat(timespec="seconds"),
        "rank_by": metric,
        "verdict": verdict(rows, metric),
        "verdicts": lines,
        **command,
        "rows": rows,
    }
    (out_dir / "compare.json").write_text(json.dumps(_plain(report), indent=2) + "\n")
    (out_dir / "compare_verdicts.txt").write_text("\n".join([report["verdict"], *lines]) + "\n")
    plots = plot_overlaid(histories, out_dir)
    page = write_compare_html(_plain(report), plots, out_dir / "compare.html")
    written = [out_dir / "compare.csv", out_dir / "compare.json", out_dir / "compare_verdicts.txt", *plots, page]
    wall = command.get("wall_time_s")
    took = f" in {wall:.0f} s" if wall is not None else ""
    console.print(f"comparison written to {out_dir}{took} (open compare.html)")
    return written


def mean_band(
    histories: list[list[dict[str, float]]], key: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per epoch over a variant's runs: (epochs, mean, min, max) of ``key``; epochs some runs lack use the rest."""
    values: dict[float, list[float]] = {}
    for history in histories:
        for row in history:
            if row.get(key) is not None:
                values.setdefault(row["epoch"], []).append(row[key])
    epochs = sorted(values)
    return (
        epochs,
        [sum(values[e]) / len(values[e]) for e in epochs],
        [min(values[e]) for e in epochs],
        [max(values[e]) for e in epochs],
    )


def overlaid_figure(histories: dict[str, list[list[dict[str, float]]]], metric: str, label: str) -> Any:
    """One colour per variant: the mean over its runs of train (solid) and validation (dashed) ``metric``,
    with a band from the lowest to the highest run at each epoch."""
    from vitkit.viz import _pyplot, fit_titles

    plt = _pyplot()
    most = max((len(runs) for runs in histories.values()), default=1)
    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=110, layout="constrained")
    for i, (name, runs) in enumerate(histories.items()):
        color = f"C{i % 10}"
        for split, style in (("train", "-"), ("val", "--")):
            epochs, mean, low, high = mean_band(runs, f"{split}_{metric}")
            if not epochs:
                continue
            marker = "o" if len(epochs) < 30 else None
            legend = name if split == "train" else "_nolegend_"  # one entry per variant: its colour
            if len(runs) > 1:
                legend = f"{name} ({len(runs)} runs)" if split == "train" else legend
                ax.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)
            ax.plot(epochs, mean, style, color=color, marker=marker, markersize=3, label=legend)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    title = f"compare: {label} (solid: train, dashed: validation)"
    if most > 1:
        title = f"compare: {label}, mean of runs, band min-max (solid: train, dashed: val)"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fit_titles(fig)


def plot_overlaid(histories: dict[str, list[list[dict[str, float]]]], out_dir: Path) -> list[Path]:
    """``compare_loss.png`` and ``compare_accuracy.png`` (``overlaid_figure``)."""
    from vitkit.viz import save

    return [
        save(overlaid_figure(histories, metric, label), out_dir / filename)
        for metric, label, filename in (
            ("loss", "loss", "compare_loss.png"),
            ("acc", "accuracy", "compare_accuracy.png"),
        )
    ]
