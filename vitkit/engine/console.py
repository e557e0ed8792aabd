"""Rich console output: a live progress bar per epoch, one line per epoch, a summary table."""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vitkit.audit.duplicates import leak_note

console = Console(highlight=False)


class EpochProgress:
    """A live bar (epoch, step, loss, lr, img/s, ETA) on terminals; silent elsewhere."""

    def __init__(self, epochs: int, steps: int) -> None:
        self.epochs, self.steps = epochs, steps
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]:.2e}  {task.fields[ips]} img/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.task: Any = None
        self.every = max(1, steps // 20)

    def __enter__(self) -> EpochProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, lr: float) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            "train", total=self.steps, epoch=epoch, epochs=self.epochs, loss="-", lr=lr, ips="-"
        )
        self._start = self.progress.get_time()

    def advance(self, step: int, loss_sum: torch.Tensor, seen: int) -> None:
        if self.progress.disable or (step % self.every and step != self.steps):
            self.progress.update(self.task, completed=step)
            return
        elapsed = max(self.progress.get_time() - self._start, 1e-9)  # reading the loss syncs: only now and then
        self.progress.update(
            self.task, completed=step, loss=f"{float(loss_sum) / seen:.4f}", ips=f"{seen / elapsed:.0f}"
        )

    def print(self, text: str) -> None:
        self.progress.console.print(text, soft_wrap=True)


def print_epoch(row: dict[str, Any], epochs: int, is_best: bool) -> str:
    width = len(str(epochs))
    mark = " [green]*best[/]" if is_best else ""
    return (
        f"epoch {row['epoch']:>{width}}/{epochs}  train_loss {row['train_loss']:.4f}  "
        f"train_acc {row['train_acc']:.4f}  val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  "
        f"lr {row['lr']:.2e}  {row['img_per_s']:.0f} img/s  {row['time']:.1f}s{mark}"
    )


def print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['name']}: summary", show_header=False)
    for key in (
        "test_acc",
        "test_map",
        "test_exact_match",
        "test_top5",
        "test_loss",
        "best_val_acc",
        "best_epoch",
        "epochs_run",
        "params",
        "train_img_per_s",
        "wall_time_s",
        "device",
        "run_dir",
    ):
        if key not in summary:  # e.g. test_* of a run that does not score the test split
            continue
        value = summary[key]
        text = f"{value:.4f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)
        if key == "test_acc" and leak_note(summary):  # duplicates of test images in train: say so right here
            text += f"  [bold red]{leak_note(summary)}[/]"
        table.add_row(key, text)
    console.print(table)
