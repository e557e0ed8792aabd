"""Wall time for ``recipes/digits.toml`` to reach a target accuracy (default 0.98), through the trainer.

A small plugin on the run's hook manager records, after every epoch, the time since the run
started, the validation accuracy and the test accuracy (scored in the hook; the hook's own time
is taken off the clock, so it does not slow the figures it reports).

    python benchmarks/digits_time_to_accuracy.py
    python benchmarks/digits_time_to_accuracy.py --set train.epochs=60 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import vitkit

ROOT = Path(__file__).resolve().parents[1]


class AccuracyClock:
    """Plugin: per epoch, seconds of training so far (hook time excluded), val and test accuracy."""

    def __init__(self, test_loader: Any, precision: str) -> None:
        self.test_loader, self.precision = test_loader, precision
        self.rows: list[dict[str, float]] = []
        self.start = 0.0
        self.excluded = 0.0

    @vitkit.hookimpl
    def vitkit_on_run_start(self, run: Any) -> None:
        self.start = time.perf_counter()

    @vitkit.hookimpl
    def vitkit_on_epoch_end(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        from vitkit.evaluation.evaluate import evaluate

        entered = time.perf_counter()
        test = evaluate(run.model, self.test_loader, run.device, self.precision)
        self.rows.append(
            {
                "epoch": epoch,
                "time_s": entered - self.start - self.excluded,
                "val_acc": metrics["val_acc"],
                "test_acc": test.acc,
            }
        )
        self.excluded += time.perf_counter() - entered


def first_reaching(rows: list[dict[str, float]], key: str, target: float) -> dict[str, float] | None:
    return next((row for row in rows if row[key] >= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "digits.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--target", type=float, default=0.98)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch
    from rich.console import Console

    from vitkit.engine.trainer import Trainer
    from vitkit.plugins import new_manager

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        overrides = [f'output.dir="{out}"', "output.plots=false", *args.overrides]
        recipe = vitkit.load_recipe(args.recipe, overrides)
        start = time.perf_counter()
        manager = new_manager()
        trainer = Trainer(recipe, plugins=manager)
        clock = AccuracyClock(trainer.test_loader, trainer.precision)
        manager.register(clock, name="accuracy_clock")
        setup = time.perf_counter() - start
        summary = trainer.fit()
        total = time.perf_counter() - start - clock.excluded

    console = Console(highlight=False, width=132)
    console.print(f"\n[bold]digits time to accuracy[/] ({recipe.model['name']}, {torch.get_num_threads()} threads)")
    console.print(f"setup (data, model) {setup:.1f} s; total incl. setup and final test {total:.1f} s")
    for key in ("val_acc", "test_acc"):
        row = first_reaching(clock.rows, key, args.target)
        if row is None:
            best = max(r[key] for r in clock.rows)
            console.print(f"{key} never reached {args.target} in {len(clock.rows)} epochs (best {best:.4f})")
        else:
            console.print(
                f"{key} >= {args.target}: epoch {row['epoch']} at {row['time_s']:.1f} s of training "
                f"(val {row['val_acc']:.4f}, test {row['test_acc']:.4f})"
            )
    console.print(
        f"final: test_acc {summary['test_acc']:.4f} (best-val checkpoint), {summary['epochs_run']} epochs, "
        f"{clock.rows[-1]['time_s']:.1f} s of training, {summary['train_img_per_s']:.0f} img/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
