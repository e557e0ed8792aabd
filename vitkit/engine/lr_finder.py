"""The learning-rate range test (``vitkit lr-find``, ``vitkit run --lr auto``) (Smith 2017, as fastai's ``lr_find``).

The recipe's model, data, loss, optimizer and precision train for a few hundred updates while the
learning rate grows exponentially from ``start`` to ``end``; the loss is smoothed (EMA, bias
corrected) and the sweep stops once it diverges. The weights, optimizer and grad-scaler state are
restored afterwards and no run directory is created (``vitkit lr-find`` writes its plot and CSV into
``<output.dir>/<name>/lr_find-<time>/``, or ``--out``). Two suggestions are read off the smoothed curve:

- ``valley``: about halfway down the longest stretch where the loss keeps falling (fastai's default);
- ``steepest``: where the smoothed loss falls fastest per decade of learning rate.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitkit.errors import UserError
from vitkit.recipe import Recipe

DEFAULT_STEPS, DEFAULT_START, DEFAULT_END = 200, 1e-7, 10.0
SMOOTHING = 0.98  # EMA factor of the loss (fastai's)
DIVERGE_FACTOR = 4.0  # stop when the smoothed loss exceeds this many times its best value
SUGGESTION_NOTES = {
    "valley": "halfway down the longest falling stretch of the loss (fastai's default)",
    "steepest": "where the smoothed loss falls fastest",
}


@dataclass
class LRFindResult:
    """One sweep: per update the learning rate, raw and smoothed loss; the suggestions read off it."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    planned: int
    start: float
    end: float
    stop_reason: str | None = None
    suggestions: dict[str, float] = field(default_factory=dict)  # name -> learning rate
    points: dict[str, int] = field(default_factory=dict)  # name -> index into lrs
    seconds: float = 0.0
    recipe_lr: float | None = None
    data: Any = field(default=None, repr=False)  # the data the sweep loaded: ``--lr auto``'s run reuses it

    @property
    def steps(self) -> int:
        """Updates actually run (fewer than ``planned`` when the loss diverged)."""
        return len(self.lrs)


def exponential_lrs(start: float, end: float, steps: int) -> list[float]:
    """``steps`` learning rates from ``start`` to ``end``, evenly spaced on a log scale."""
    if steps < 2:
        return [start] * steps
    ratio = end / start
    return [start * ratio ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Exponential moving average of ``losses`` with bias correction (the first values are not pulled to 0)."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def steepest_index(lrs: list[float], losses: list[float]) -> int:
    """Index of the most negative slope of ``losses`` against log(lr)."""
    import numpy as np

    slope = np.gradient(np.asarray(losses, dtype=float), np.log(np.asarray(lrs, dtype=float)))
    return int(np.argmin(slope))


def valley_index(losses: list[float]) -> int:
    """Index halfway along the longest valley: the longest chain of ever lower losses (fastai's ``valley``)."""
    n = len(losses)
    chain = [1] * n  # length of the longest strictly falling chain that ends at i
    for i in range(1, n):
        chain[i] = 1 + max((chain[j] for j in range(i) if losses[j] > losses[i]), default=0)
    end = max(range(n), key=lambda i: (chain[i], -i))  # the first of the longest
    begin = end - chain[end] + 1
    return begin + (end - begin) // 2


def suggest(lrs: list[float], smoothed: list[float], planned: int) -> dict[str, int]:
    """Indices of the ``valley`` and ``steepest`` suggestions; as fastai, the first tenth of the planned
    sweep (the flat start) and the last 5 updates (the blow-up) are left out. Empty when too short."""
    first, last = planned // 10, len(lrs) - 5
    finite = [i for i in range(first, last) if math.isfinite(smoothed[i])]
    if len(finite) < 3:
        return {}
    window = range(finite[0], finite[-1] + 1)
    values = [smoothed[i] for i in window]
    offset = window.start
    return {
        "valley": offset + valley_index(values),
        "steepest": offset + steepest_index([lrs[i] for i in window], values),
    }


def _batches(loader: Any) -> Iterator[Any]:
    """The training loader's batches, epoch after epoch, for as long as they are asked for."""
    epoch = 1
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def range_test(
    trainer: Any,
    steps: int = DEFAULT_STEPS,
    start: float = DEFAULT_START,
    end: float = DEFAULT_END,
    diverge: float = DIVERGE_FACTOR,
) -> LRFindResult:
    """Sweep ``trainer``'s optimizer LR from ``start`` to ``end`` over ``steps`` updates of its model on its
    training data; model, optimizer and scaler are restored exactly afterwards."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from vitkit.engine.console import console
    from vitkit.engine.device import autocast
    from vitkit.engine.faults import scaler_step

    if not (0 < start < end):
        raise UserError(f"lr-find: expected 0 < start < end, got start {start:g}, end {end:g}")
    if steps < 10:
        raise UserError(f"lr-find: --steps {steps} is too few for a curve; use 100 or more")
    model, optimizer, scaler = trainer.model, trainer.optimizer, trainer.scaler
    saved_model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    saved_scaler = copy.deepcopy(scaler.state_dict())
    was_training = model.training
    accum = trainer.recipe.train.grad_accum_steps
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    lrs, losses, smoothed = [], [], []
    stop, best, average = None, math.inf, 0.0
    started = time.perf_counter()
    progress = Progress(
        TextColumn("lr-find"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lr {task.fields[lr]:.1e}  loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console.quiet or not console.is_terminal,
    )
    try:
        model.train()
        if isinstance(trainer.loss_fn, torch.nn.Module):
            trainer.loss_fn.train()
        batches = _batches(trainer.train_loader)
        progress.start()
        task = progress.add_task("lr-find", total=steps, lr=start, loss="-")
        for i, lr in enumerate(exponential_lrs(start, end, steps)):
            for group, scale in zip(optimizer.param_groups, scales, strict=True):
                group["lr"] = lr * scale
            total = torch.zeros((), device=trainer.device)
            for _ in range(accum):
                images, targets = next(batches)
                with autocast(trainer.device, trainer.precision):
                    loss, _ = trainer._compute_loss(images, targets)
                scaler.scale(loss / accum).backward()
                total += loss.detach().float() / accum
            trainer._clip()
            scaler_step(scaler, optimizer)
            optimizer.zero_grad(set_to_none=True)
            value = float(total)  # one sync per update: the sweep must see divergence at once
            lrs.append(lr)
            losses.append(value)
            progress.update(task, completed=i + 1, lr=lr, loss=f"{value:.3f}")
            if not math.isfinite(value):
                smoothed.append(math.nan)
                stop = f"the loss became {value} at lr {lr:.2e}"
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
            best = min(best, smoothed[-1])
            if smoothed[-1] > diverge * best:
                stop = f"the smoothed loss passed {diverge:g}x its best at lr {lr:.2e}"
                break
    finally:
        progress.stop()
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        scaler.load_state_dict(saved_scaler)
        model.train(was_training)
    result = LRFindResult(lrs, losses, smoothed, steps, start, end, stop, seconds=time.perf_counter() - started)
    result.points = suggest(lrs, smoothed, steps)
    result.suggestions = {name: lrs[i] for name, i in result.points.items()}
    return result


SUGGESTION_STYLE = {"valley": ("C3", "o"), "steepest": ("C2", "D")}  # colour, marker: apart from the curves


def lr_find_figure(result: LRFindResult, title: str = "") -> Any:
    """The figure of ``lr_find.png``: raw and smoothed loss against the learning rate (log scale), each
    suggestion a marker drawn above the curves and named with its LR in the legend, the recipe's LR dashed."""
    from vitkit.viz import _pyplot, fit_titles

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="loss per update")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed loss")
    if result.recipe_lr:
        ax.axvline(
            result.recipe_lr, color="0.4", linestyle="--", linewidth=1, label=f"recipe lr {result.recipe_lr:.1e}"
        )
    for name, index in result.points.items():
        color, marker = SUGGESTION_STYLE[name]
        lr = result.lrs[index]
        ax.plot(
            lr, result.smoothed[index], marker, color=color, markersize=9, markeredgecolor="white",
            markeredgewidth=1.2, zorder=5, label=f"{name} {lr:.1e}",
        )  # fmt: skip
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the raw loss and a blow-up would otherwise flatten the interesting part
        low, high = min(finite), min(max(finite), 2.0 * finite[0])
        margin = 0.05 * (high - low) or 0.05
        ax.set_ylim(low - margin, high + margin)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title} — LR range test" if title else "LR range test")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fit_titles(fig)


def plot_lr_find(result: LRFindResult, path: Path, title: str = "") -> Path:
    """``lr_find.png`` (``lr_find_figure``) saved to ``path``."""
    from vitkit.viz import save

    return save(lr_find_figure(result, title), path)


def write_csv(result: LRFindResult, path: Path) -> Path:
    """``lr_find.csv``: step, lr, loss, smoothed loss."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, row in enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True), start=1):
            writer.writerow([i, *(f"{v:.6g}" for v in row)])
    return Path(path)


def write_outputs(result: LRFindResult, folder: str | Path, title: str = "") -> list[Path]:
    """``lr_find.png`` and ``lr_find.csv`` in ``folder`` (created); returns their paths."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"lr-find: cannot create the output folder {folder}: {err.strerror}") from None
    return [plot_lr_find(result, folder / "lr_find.png", title), write_csv(result, folder / "lr_find.csv")]


def lr_find(
    recipe: Recipe,
    steps: int = DEFAULT_STEPS,
    start: float = DEFAULT_START,
    end: float = DEFAULT_END,
    out: str | Path | None = None,
    plugins: Any = None,
) -> LRFindResult:
    """Run the range test on ``recipe`` (no run directory made); ``out``: folder for ``lr_find.png``
    and ``lr_find.csv`` (``None``: write nothing)."""
    from vitkit.engine.trainer import Trainer

    trainer = Trainer(recipe, plugins)
    result = range_test(trainer, steps, start, end)
    result.data = trainer.data
    lr = recipe.optimizer.get("lr")
    result.recipe_lr = float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None
    if out is not None:
        write_outputs(result, out, recipe.name)
    return result
