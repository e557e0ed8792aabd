"""Registered learning-rate schedulers: linear warm-up, then a shape; stepped once per optimizer update.

Every scheduler is a ``LambdaLR`` (or a subclass): it multiplies each parameter group's own
initial LR by the same factor, so per-group LR scales (layer-wise LR decay) keep their ratios.
Epoch-based arguments (``warmup_epochs``, ``step_epochs``, ``milestones``) are converted to updates
with ``steps_per_epoch``. A scheduler with an ``on_epoch_end(metrics)`` method is also told each
epoch's metrics by the trainer (``plateau`` uses this).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from vitkit.registry import register_scheduler


def warmup(after: Callable[[int], float], warmup_steps: int, warmup_start: float = 0.0) -> Callable[[int], float]:
    """LR factor per update: linear warm-up over ``warmup_steps``, then ``after(step)``.

    A plain function (not an object), so ``LambdaLR.state_dict()`` does not try to save it.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start + (1.0 - warmup_start) * (step + 1) / warmup_steps
        return after(step)

    return factor


def _warmup_steps(steps_per_epoch: int, warmup_epochs: float, warmup_steps: int | None) -> int:
    if warmup_steps is not None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        return int(warmup_steps)
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    return int(round(warmup_epochs * steps_per_epoch))


def _progress(warm: int, total_steps: int) -> Callable[[int], float]:
    """Step -> fraction (0..1) of the updates after warm-up."""
    span = max(1, total_steps - warm)
    return lambda step: min(1.0, (step - warm) / span)


def _decaying(
    shape: Callable[[float], float],
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float,
    warmup_steps: int | None,
) -> LambdaLR:
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    progress = _progress(warm, total_steps)
    return LambdaLR(optimizer, warmup(lambda step: shape(progress(step)), warm))


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@register_scheduler("cosine")
def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x the base LR."""
    _check_ratio("min_lr_ratio", min_lr_ratio)

    def shape(t: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return _decaying(shape, optimizer, total_steps, steps_per_epoch, warmup_epochs, warmup_steps)


@register_scheduler("polynomial")
def polynomial(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
    power: float = 1.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then ``(1 - t) ** power`` decay to ``min_lr_ratio`` (power 1: linear)."""
    _check_ratio("min_lr_ratio", min_lr_ratio)
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    return _decaying(
        lambda t: min_lr_ratio + (1 - min_lr_ratio) * (1 - t) ** power,
        optimizer,
        total_steps,
        steps_per_epoch,
        warmup_epochs,
        warmup_steps,
    )


@register_scheduler("one_cycle")
def one_cycle(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> LambdaLR:
    """One-cycle: linear rise from LR/div_factor over pct_start of training, then cosine down.

    The LR ends at LR/(``div_factor`` x ``final_div_factor``); the rise is this scheduler's warm-up.
    """
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
    if div_factor < 1 or final_div_factor < 1:
        raise ValueError("div_factor and final_div_factor must be >= 1")
    warm = max(1, int(round(pct_start * total_steps)))
    progress = _progress(warm, total_steps)
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    return LambdaLR(
        optimizer,
        warmup(lambda step: end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress(step))), warm, start),
    )


@register_scheduler("step")
def step(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    step_epochs: float = 30.0,
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up, then the LR times ``gamma`` every ``step_epochs`` epochs (counted from the start)."""
    if step_epochs <= 0:
        raise ValueError(f"step_epochs must be > 0, got {step_epochs}")
    every = max(1, int(round(step_epochs * steps_per_epoch)))
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    return LambdaLR(optimizer, warmup(lambda s: gamma ** (s // every), warm))


@register_scheduler("multistep")
def multistep(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    milestones: Sequence[float] = (30.0, 60.0, 90.0),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up, then the LR times ``gamma`` at each epoch in ``milestones``."""
    marks = sorted(int(round(m * steps_per_epoch)) for m in milestones)
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    return LambdaLR(optimizer, warmup(lambda s: gamma ** sum(s >= m for m in marks), warm))


@register_scheduler("constant")
def constant(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up, then the base LR throughout."""
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    return LambdaLR(optimizer, warmup(lambda s: 1.0, warm))


class PlateauFactor:
    """Warm-up, then a factor cut by ``factor`` when ``metric`` stops improving for ``patience`` epochs.

    A callable object, so ``LambdaLR.state_dict()`` saves its state (scale, best, bad epochs).
    """

    def __init__(
        self,
        warmup_steps: int,
        metric: str,
        mode: str,
        factor: float,
        patience: int,
        threshold: float,
        min_scale: float,
    ) -> None:
        self.warmup_steps, self.metric, self.mode = warmup_steps, metric, mode
        self.factor, self.patience, self.threshold, self.min_scale = factor, patience, threshold, min_scale
        self.scale, self.best, self.bad_epochs = 1.0, None, 0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.scale

    def observe(self, value: float) -> None:
        better = (
            self.best is None
            or (self.mode == "max" and value > self.best + self.threshold)
            or (self.mode == "min" and value < self.best - self.threshold)
        )
        if better:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale, self.bad_epochs = max(self.min_scale, self.scale * self.factor), 0


class PlateauLR(LambdaLR):
    """``LambdaLR`` over a ``PlateauFactor``; the trainer calls ``on_epoch_end`` after validation."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        plateau: PlateauFactor = self.lr_lambdas[0]
        if plateau.metric not in metrics:
            from vitkit.errors import UserError

            known = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, float)))
            raise UserError(f"scheduler.metric: no metric {plateau.metric!r} in this run (known: {known})")
        plateau.observe(float(metrics[plateau.metric]))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * plateau(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


@register_scheduler("plateau")
def plateau(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    metric: str = "val_loss",
    mode: str = "auto",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    min_lr_ratio: float = 0.0,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
) -> PlateauLR:
    """Linear warm-up, then the LR times ``factor`` when ``metric`` has not improved for ``patience`` epochs."""
    if mode == "auto":
        mode = "max" if "acc" in metric else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    _check_ratio("min_lr_ratio", min_lr_ratio)
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    # one lambda object shared by every group: one plateau state, the same factor everywhere
    shared = PlateauFactor(warm, metric, mode, factor, patience, threshold, min_lr_ratio)
    return PlateauLR(optimizer, [shared] * len(optimizer.param_groups))
