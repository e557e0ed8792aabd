"""The training loop: epochs of optimizer updates, validation, checkpoints, final test evaluation."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from vitkit.data import BatchTransform, build_loader
from vitkit.engine import build
from vitkit.engine.checkpoint import atomic_write_text, save_checkpoint, save_safetensors
from vitkit.engine.console import EpochProgress, console, print_epoch, print_summary
from vitkit.engine.device import autocast, select_device, select_precision
from vitkit.engine.evaluate import evaluate
from vitkit.engine.faults import NonFiniteWatch, divergence_error, scaler_step
from vitkit.engine.resume import capture_rng
from vitkit.engine.run import Run
from vitkit.errors import UserError
from vitkit.plugins import new_manager
from vitkit.recipe import Recipe, dump_toml

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "img_per_s"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def new_run_dir(recipe: Recipe) -> Path:
    """``<output.dir>/<name>/<YYYYmmdd-HHMMSS>[-N]/``, created; unwritable locations are user errors."""
    parent = Path(recipe.output.dir) / recipe.name
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise UserError(
            f"{recipe.where()}: output.dir: cannot create a run directory under {parent}: {err.strerror}"
        ) from None
    raise UserError(f"output.dir: too many runs started this second under {parent}")


class Trainer:
    """Builds everything a recipe names, then ``fit()`` trains, validates and tests."""

    def __init__(self, recipe: Recipe, plugins: Any = None) -> None:
        self.recipe = recipe
        self.hooks = (plugins or new_manager()).hook
        seed_everything(recipe.seed)
        try:
            self.device = select_device(recipe.train.device)
            self.precision = select_precision(recipe.train.precision, self.device)
        except UserError as err:
            raise UserError(f"{recipe.where()}: {err}") from None

        # describe the dataset (cheap) to size the model, then load it
        self.img_size = build.model_img_size(recipe)
        self.data = build.load_dataset(recipe, self.img_size)
        self.model = build.build_model(recipe, len(self.data.classes), self.data.in_chans).to(self.device)

        data = recipe.data
        eval_batch = data.eval_batch_size or 4 * data.batch_size
        train_tf = BatchTransform(self.img_size, self.data.mean, self.data.std, build.build_augments(recipe))
        eval_tf = BatchTransform(self.img_size, self.data.mean, self.data.std)
        self.train_loader = build_loader(
            self.data.train, data.batch_size, train_tf, self.device, True, data.num_workers, recipe.seed
        )
        if len(self.train_loader) == 0:
            raise UserError(
                f"{recipe.where()}: data.batch_size {data.batch_size} is larger than the "
                f"training split ({len(self.data.train)} images)"
            )
        self.val_loader = build_loader(self.data.val, eval_batch, eval_tf, self.device, False, data.num_workers)
        self.test_loader = build_loader(self.data.test, eval_batch, eval_tf, self.device, False, data.num_workers)

        self.loss_fn = build.build_loss(recipe)
        self.optimizer = build.build_optimizer(recipe, self.model)
        accum = recipe.train.grad_accum_steps
        self.steps_per_epoch = math.ceil(len(self.train_loader) / accum)
        self.scheduler = build.build_scheduler(
            recipe, self.optimizer, self.steps_per_epoch * recipe.train.epochs, self.steps_per_epoch
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.forward = torch.compile(self.model) if recipe.train.compile else self.model
        self.params = sum(p.numel() for p in self.model.parameters())
        self.saved_epoch: int | None = None  # the epoch checkpoints/last.pt holds

    # ------------------------------------------------------------------------------------ loop

    def train_epoch(self, epoch: int, progress: EpochProgress) -> dict[str, float]:
        model, accum, clip = self.forward, self.recipe.train.grad_accum_steps, self.recipe.train.clip_grad
        self.model.train()
        self.train_loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        steps = len(self.train_loader)
        watch, skipped = NonFiniteWatch(self.device), 0
        for step, (images, targets) in enumerate(self.train_loader):
            with autocast(self.device, self.precision):
                logits = model(images)
                loss = self.loss_fn(logits, targets)
            watch.observe(loss, step)
            if watch.due(step, steps) and (bad := watch.first_bad()) is not None:
                raise divergence_error(self.recipe, self.precision, epoch, bad, steps, self.saved_epoch)
            self.scaler.scale(loss / accum).backward()
            if (step + 1) % accum == 0 or step + 1 == steps:
                if clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                skipped += scaler_step(self.scaler, self.optimizer)
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
            loss_sum += loss.detach() * len(targets)
            if targets.ndim == 1:
                correct += (logits.detach().argmax(dim=1) == targets).sum()
            seen += len(targets)
            progress.advance(step + 1, loss_sum, seen)
        elapsed = time.perf_counter() - start
        train_loss = float(loss_sum) / seen
        return {
            "train_loss": train_loss,
            "train_acc": float(correct) / seen,
            "img_per_s": seen / elapsed,
            "train_time": elapsed,
            "skipped_steps": skipped,
        }

    def fit(self, run_dir: Path | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train for ``train.epochs``, keep the best checkpoint by val_acc, test it; returns the summary.

        ``resume``: a ``checkpoints/last.pt`` state of ``run_dir`` to continue from (see ``engine.resume``).
        """
        recipe = self.recipe
        run_dir = run_dir or new_run_dir(recipe)
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.toml").write_text(dump_toml(recipe.to_dict()))
        run = Run(recipe, self.model, run_dir, self.device, self.data.classes)
        self.run = run
        console.print(
            f"[bold]vitkit run[/] {recipe.name}: {recipe.model['name']} "
            f"({self.params / 1e6:.2f} M params) on {self.device} ({self.precision}), "
            f"{len(self.data.train)}/{len(self.data.val)}/{len(self.data.test)} train/val/test images "
            f"-> {run_dir}"
        )
        self.hooks.vitkit_on_run_start(run=run)
        first_epoch, best_acc, best_loss, best_epoch = 1, -1.0, math.inf, 0
        if resume is not None:
            from vitkit.engine.resume import restore

            first_epoch, best_acc, best_loss, best_epoch = restore(self, resume)
            console.print(f"resuming after epoch {first_epoch - 1} from {run_dir / 'checkpoints' / 'last.pt'}")
        else:  # epoch 0: a run killed during its first epoch can resume too
            self._save(run_dir, 0, best_acc, best_epoch, run.history, False)
        start = time.perf_counter() - (run.history[-1]["time"] if run.history else 0.0)
        epochs = recipe.train.epochs
        with EpochProgress(epochs, len(self.train_loader)) as progress:
            for epoch in range(first_epoch, epochs + 1):
                progress.start_epoch(epoch, self.optimizer.param_groups[0]["lr"])
                row: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch, progress)}
                val = evaluate(self.model, self.val_loader, self.device, self.precision)
                row.update(
                    val_loss=val.loss,
                    val_acc=val.acc,
                    lr=self.optimizer.param_groups[0]["lr"],
                    time=time.perf_counter() - start,
                )
                run.history.append(row)
                is_best = val.acc > best_acc or (val.acc == best_acc and val.loss < best_loss)
                if is_best:
                    best_acc, best_loss, best_epoch = val.acc, val.loss, epoch
                self._save(run_dir, epoch, best_acc, best_epoch, run.history, is_best)
                self._write_metrics(run_dir, run.history)
                progress.print(print_epoch(row, epochs, is_best))
                self.hooks.vitkit_on_epoch_end(run=run, epoch=epoch, metrics=dict(row))
                if run.should_stop:
                    console.print(f"stopping after epoch {epoch}: {run.stop_reason}")
                    break
        return self._finish(run, best_acc, best_epoch, time.perf_counter() - start)

    # --------------------------------------------------------------------------------- outputs

    def data_meta(self) -> dict[str, Any]:
        """What prediction needs to turn an image into this model's input."""
        return {
            "classes": self.data.classes,
            "in_chans": self.data.in_chans,
            "img_size": self.img_size,
            "mean": list(self.data.mean),
            "std": list(self.data.std),
        }

    def _save(
        self, run_dir: Path, epoch: int, best_acc: float, best_epoch: int, history: list[dict[str, Any]], is_best: bool
    ) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_val_acc": best_acc,
            "best_epoch": best_epoch,
            "history": history,
            "recipe": self.recipe.to_dict(),
            "data": self.data_meta(),
            "rng": capture_rng(self.device),
        }
        if is_best:  # before last.pt: a kill in between redoes this epoch, identically, and rewrites best.pt
            best = {k: state[k] for k in ("model", "epoch", "best_val_acc", "recipe", "data")}
            save_checkpoint(best, run_dir / "checkpoints" / "best.pt")
        save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
        self.saved_epoch = epoch

    @staticmethod
    def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(run_dir / "metrics.csv", text.getvalue())

    def _finish(self, run: Run, best_acc: float, best_epoch: int, wall: float) -> dict[str, Any]:
        from vitkit.engine.checkpoint import load_checkpoint

        run_dir = run.run_dir
        best = load_checkpoint(run_dir / "checkpoints" / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        test = evaluate(self.model, self.test_loader, self.device, self.precision)
        last = run.history[-1]
        summary = {
            "name": self.recipe.name,
            "model": self.recipe.model["name"],
            "test_acc": test.acc,
            "test_top5": test.top5,
            "test_loss": test.loss,
            "best_val_acc": best_acc,
            "best_epoch": best_epoch,
            "epochs_run": last["epoch"],
            "final_train_loss": last["train_loss"],
            "final_val_acc": last["val_acc"],
            "params": self.params,
            "wall_time_s": wall,
            "train_img_per_s": sum(r["img_per_s"] for r in run.history) / len(run.history),
            "device": str(self.device),
            "precision": self.precision,
            "seed": self.recipe.seed,
            "stop_reason": run.stop_reason,
            "skipped_steps": sum(r.get("skipped_steps", 0) for r in run.history),
            "bad_images": len(self.data.bad_images),
            "run_dir": str(run_dir),
        }
        save_safetensors(
            self.model, run_dir / "model.safetensors", {"model": self.recipe.model, "data": self.data_meta()}
        )
        if self.recipe.output.plots:
            from vitkit.viz import plot_curves

            plot_curves(run.history, run_dir, title=self.recipe.name)
        from vitkit.engine.report import write_run_report

        write_run_report(
            run_dir, self.recipe.name, test, self.data.test, self.data.classes, run.history, self.recipe.output.plots
        )
        # last: a run directory with summary.json is finished (``--resume`` refuses it)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        self.hooks.vitkit_on_run_end(run=run, summary=summary)
        print_summary(summary)
        return summary
