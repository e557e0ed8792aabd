"""Plots (matplotlib, Agg backend): training curves; saved as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _best_epoch(history: Sequence[dict[str, Any]]) -> int | None:
    scored = [row for row in history if row.get("val_acc") is not None]
    return max(scored, key=lambda r: (r["val_acc"], -r["val_loss"]))["epoch"] if scored else None


def plot_curves(history: Sequence[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """``loss.png`` and ``accuracy.png``: train vs validation per epoch, best epoch marked."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    best = _best_epoch(history)
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
