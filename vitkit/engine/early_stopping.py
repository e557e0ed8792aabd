"""Early stopping as an internal plugin: watches one metric per epoch, asks the run to stop."""

from __future__ import annotations

from typing import Any

from vitkit.errors import UserError
from vitkit.plugins import hookimpl


class EarlyStopping:
    """Stop when ``metric`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(self, metric: str = "val_acc", patience: int = 10, min_delta: float = 0.0, mode: str = "auto") -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.mode = mode if mode != "auto" else ("max" if "acc" in metric else "min")
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def observe(self, epoch: int, metrics: dict[str, Any]) -> bool:
        """Record one epoch's metrics; True when the run should stop."""
        if self.metric not in metrics:
            known = ", ".join(k for k, v in metrics.items() if isinstance(v, float))
            raise UserError(f"train.early_stopping.metric: no metric {self.metric!r} in this run (known: {known})")
        value = float(metrics[self.metric])
        if self.improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Rebuild the state from a resumed run's metric rows (``metrics.csv``), as if it had watched them."""
        self.best, self.best_epoch, self.bad_epochs = None, 0, 0
        for row in history:
            self.observe(int(row["epoch"]), row)

    @hookimpl
    def vitkit_on_epoch_end(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        if self.observe(epoch, metrics):
            run.request_stop(
                f"early stopping: {self.metric} has not improved on {self.best:.4g} (epoch {self.best_epoch}) "
                f"for {self.patience} epochs"
            )
