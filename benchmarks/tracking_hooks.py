"""Per-epoch cost of the tracking plugins' hooks, called as the trainer calls them (docs/tracking.md).

    pip install ./plugins/vitkit-tensorboard ./plugins/vitkit-mlflow
    python benchmarks/tracking_hooks.py

One digits epoch is 21 optimizer updates (1295 train images, batch 64), so each timed "epoch" is
21 ``vitkit_on_train_step`` calls and one ``vitkit_on_epoch_end``; MLflow writes to a fresh SQLite
file in a temporary folder.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from vitkit.engine.hooks import GuardedHooks
from vitkit.plugins import new_manager
from vitkit.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
STEPS, EPOCHS = 21, 30
METRICS = {
    "epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "img_per_s": 4000.0, "train_time": 0.3,
    "skipped_steps": 0, "val_loss": 1.1, "val_acc": 0.5, "lr": 1e-3, "time": 1.0,
}  # fmt: skip


def measure(name: str, plugin: object, tmp: Path) -> list[float]:
    """Seconds per epoch of hooks, ``EPOCHS`` times."""
    manager = new_manager()
    manager.register(plugin, name)
    hooks = GuardedHooks(manager)
    run_dir = tmp / name / "20260101-000000"
    run_dir.mkdir(parents=True)
    run = SimpleNamespace(
        recipe=load_recipe(ROOT / "recipes" / "digits.toml"), model=torch.nn.Linear(2, 2), run_dir=run_dir,
        device=torch.device("cpu"), classes=[str(i) for i in range(10)], history=[{}],
    )  # fmt: skip
    hooks.vitkit_on_run_start(run=run)
    loss, seconds = torch.tensor(1.0), []
    for epoch in range(1, EPOCHS + 1):
        start = time.perf_counter()
        for step in range(STEPS):
            hooks.vitkit_on_train_step(run=run, epoch=epoch, step=(epoch - 1) * STEPS + step + 1, lr=1e-3, loss=loss)
        hooks.vitkit_on_epoch_end(run=run, epoch=epoch, metrics=METRICS)
        seconds.append(time.perf_counter() - start)
    assert not hooks.failures, hooks.failures
    return seconds


def main() -> None:
    import vitkit_mlflow
    import vitkit_tensorboard

    tmp = Path(tempfile.mkdtemp())
    os.environ["VITKIT_TENSORBOARD"] = "1"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    for name, plugin in (("tensorboard", vitkit_tensorboard), ("mlflow", vitkit_mlflow)):
        seconds = measure(name, plugin, tmp)
        low, _, high = statistics.quantiles(seconds, n=4)
        print(
            f"{name}: per epoch ({STEPS} step hooks + 1 epoch hook) median {statistics.median(seconds) * 1e3:.1f} ms, "
            f"quartiles {low * 1e3:.1f}-{high * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
