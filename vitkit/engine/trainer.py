"""The training loop: epochs of optimizer updates, validation, checkpoints, final test evaluation."""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch

from vitkit.data import build_loader
from vitkit.data.datasets import DataSplits
from vitkit.data.folder import write_split
from vitkit.data.setup import apply_balance, batch_transforms
from vitkit.engine import build, elastic
from vitkit.engine import distributed as dist
from vitkit.engine.console import EpochProgress, console, print_epoch
from vitkit.engine.device import apply_tf32, select_device, select_precision, use_tf32
from vitkit.engine.efficiency import CompileWhenPays, enable_grad_checkpointing, resolve_precision
from vitkit.engine.ema import ModelEma
from vitkit.engine.epoch import clip_gradients, compute_loss, train_epoch
from vitkit.engine.hooks import GuardedHooks
from vitkit.engine.progressive import progressive
from vitkit.engine.run import Run
from vitkit.engine.threads import busy_note, set_threads
from vitkit.errors import UserError
from vitkit.evaluation.evaluate import Evaluation, evaluate
from vitkit.plugins import new_manager
from vitkit.recipe import Recipe, dump_toml
from vitkit.runs.checkpoint import save_checkpoint
from vitkit.runs.layout import new_run_dir
from vitkit.runs.outputs import calibrate, choose_thresholds, write_finished_run, write_metrics
from vitkit.runs.resume import capture_rng


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, torch and numpy; ``deterministic`` also forbids nondeterministic kernels."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic)  # off again for a later run in this process
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


class Trainer:
    """Builds everything a recipe names, then ``fit()`` trains, validates and tests."""

    score_test = True  # False: fit() never evaluates the test split (a ``vitkit tune`` trial)

    def __init__(self, recipe: Recipe, plugins: Any = None, data: DataSplits | None = None) -> None:
        """``data``: the recipe's data already loaded (``build.load_dataset``), e.g. by the LR finder."""
        self.recipe = recipe
        self.plugins = plugins or new_manager()
        self.hooks = GuardedHooks(self.plugins)  # a plugin's exception is reported, the run goes on
        self.dist = dist.init_distributed(recipe.train.device, recipe.train.wait_timeout)
        if not self.dist.is_main:
            console.quiet = True  # rank 0 alone prints
        seed_everything(recipe.seed, recipe.train.deterministic)
        self.threads = set_threads(recipe.train.threads)
        note = busy_note(self.threads) if self.dist.is_main else None
        if note:
            console.print(f"[yellow]{note}[/]", soft_wrap=True)
        try:
            self.device = dist.process_device(self.dist, select_device(recipe.train.device))
            self.precision = select_precision(recipe.train.precision, self.device)  # checked before data loads
        except UserError as err:
            raise UserError(f"{recipe.where()}: {err}") from None
        self.tf32 = use_tf32(self.precision, self.device, recipe.train.tf32)  # fp32 on Ampere+: TF32 matmuls
        apply_tf32(self.tf32)
        self.strategy = recipe.train.strategy if self.dist.enabled else "single"

        # describe the dataset (cheap) to size the model, then load it
        self.img_size = build.model_img_size(recipe)
        self.preprocessing = build.preprocessing(recipe)  # eval crop, interpolation, normalisation: decided once
        if data is None:
            data = build.load_dataset(recipe, self.img_size, self.device, view=self.preprocessing)
        self.data = data
        num_classes = len(self.data.classes)
        self.model = build.build_model(recipe, num_classes, self.data.in_chans).to(self.device)
        self.precision, why = resolve_precision(  # final: CPU auto needs the model
            recipe.train.precision, self.device, self.model, self.data.in_chans, self.img_size
        )
        if why:
            console.print(why)
        if recipe.train.grad_checkpointing:
            enable_grad_checkpointing(self.model, recipe.where())
        self.progressive = progressive(recipe, self.model, self.img_size)  # train.progressive: smaller images first
        self.data.mean, self.data.std = self.preprocessing.mean_std(self.data.in_chans, self.data.mean, self.data.std)
        if self.dist.enabled:  # same initial weights on every rank; from here each rank draws its own numbers
            seed_everything(recipe.seed + self.dist.rank, recipe.train.deterministic)
        if recipe.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

        self.loss_fn = build.build_loss(recipe, num_classes, self.data.in_chans, self.img_size)
        if isinstance(self.loss_fn, torch.nn.Module):  # a plugin's loss may be a plain function
            self.loss_fn.to(self.device)
        self.thresholds: list[float] | None = None  # multi-label: per-class thresholds, chosen on val at the end
        if self.data.multi_label:
            from vitkit.data.multilabel import check_multi_label

            check_multi_label(recipe, self.loss_fn)
        if hasattr(self.loss_fn, "prepare_student"):  # distillation: DeiT's two heads, each its own term
            self.loss_fn.prepare_student(self.model)
        self.ema = ModelEma(self.model, recipe.train.ema) if recipe.train.ema > 0 else None
        if self.ema is not None and self.strategy == "fsdp":
            raise UserError(f"{recipe.where()}: train.ema is not supported with train.strategy = 'fsdp'")
        dist.waiting_for("the other processes to wrap the model (its initial weights)")
        self.wrapped = dist.wrap_model(self.model, self.strategy, self.device) if self.dist.enabled else self.model
        self.optimizer = build.build_optimizer(recipe, self.model)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.forward = torch.compile(self.wrapped) if recipe.train.compile is True else self.wrapped
        self.compile_trial: CompileWhenPays | None = None  # train.compile = "auto": made when the steps are known

        # the batch size ("auto" probes a real step of everything built above), then loaders and schedule
        data = recipe.data
        self.batch_size = self._batch_size()
        eval_batch = data.eval_batch_size or 4 * self.batch_size
        augments = build.build_augments(recipe, num_classes, self.img_size)
        train_tf, eval_tf = batch_transforms(recipe, self.data, self.img_size, augments)
        self.train_transform = train_tf
        rank, world, wait = self.dist.rank, self.dist.world_size, recipe.train.wait_timeout
        self.train_loader = build_loader(
            self.data.train, self.batch_size, train_tf, self.device, True, data.num_workers, recipe.seed, rank, world,
            wait,
        )  # fmt: skip
        if len(self.train_loader) == 0:  # a share smaller than a batch is one short step (data.shares)
            raise UserError(
                f"{recipe.where()}: the training split has {len(self.data.train)} images, fewer than the "
                f"{world} processes of this run (each trains on its own share)"
                if world > 1
                else f"{recipe.where()}: the training split has no images"
            )
        # FSDP runs collectives in every forward: every rank evaluates the whole split, in step
        eval_rank, eval_world = (0, 1) if self.strategy == "fsdp" else (rank, world)
        self.val_loader = build_loader(
            self.data.val, eval_batch, eval_tf, self.device, False, data.num_workers, 0, eval_rank, eval_world, wait
        )
        self.test_loader = build_loader(
            self.data.test, eval_batch, eval_tf, self.device, False, data.num_workers, 0, eval_rank, eval_world, wait
        )

        self.balance = apply_balance(recipe, self.data, self.train_loader, self.loss_fn)  # the loader's counts
        accum = recipe.train.grad_accum_steps
        self.steps_per_epoch = math.ceil(len(self.train_loader) / accum)
        self.scheduler = build.build_scheduler(
            recipe, self.optimizer, self.steps_per_epoch * recipe.train.epochs, self.steps_per_epoch
        )
        self.params = sum(p.numel() for p in self.model.parameters())
        self.saved_epoch: int | None = None  # the epoch checkpoints/last.pt holds
        if self.plugins.get_plugin("early_stopping") is not None:  # a manager reused from an earlier run
            self.plugins.unregister(name="early_stopping")
        if recipe.train.early_stopping.patience > 0 and self.dist.is_main:
            from vitkit.engine.early_stopping import EarlyStopping

            stop = recipe.train.early_stopping
            self.plugins.register(
                EarlyStopping(stop.metric, stop.patience, stop.min_delta, stop.mode), "early_stopping"
            )

    def _batch_size(self) -> int:
        """``data.batch_size``, or the one ``"auto"`` finds (the smallest over ranks)."""
        size = self.recipe.data.batch_size
        if size != "auto":
            return size
        from vitkit.engine.autobatch import find_batch_size

        limit = max(2, len(self.data.train) // self.dist.world_size)
        size, how = find_batch_size(self._probe_step, self.device, limit)
        dist.waiting_for("the batch sizes the other processes found (data.batch_size = auto)")
        size = dist.all_reduce_min(size, self.device)
        console.print(how)
        return size

    def _probe_step(self, size: int) -> None:
        """One training step on ``size`` random images, then every state as it was (``engine.autobatch``)."""
        from vitkit.engine.autobatch import probe_step

        probe_step(self, size)

    # ------------------------------------------------------------------------------------ loop

    def _compute_loss(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return compute_loss(self, images, targets)

    def _clip(self) -> None:
        clip_gradients(self)

    def train_epoch(self, epoch: int, progress: EpochProgress) -> dict[str, float]:
        """One epoch (``engine.epoch``)."""
        return train_epoch(self, epoch, progress)

    def _evaluate(self, model: torch.nn.Module, loader: Any, whole: bool = False, what: str = "") -> Evaluation:
        """Evaluate on this rank's shard, then combine the shards' results (``whole``: with every
        image's prediction, in split order, for the report). ``what``: the evaluation, for a timeout."""
        dist.waiting_for(f"the results of {what or 'an evaluation'}")
        result = evaluate(model, loader, self.device, self.precision, len(self.data.classes), self.data.multi_label)
        return result if self.strategy == "fsdp" else dist.reduce_evaluation(result, self.device, whole)

    def lr(self) -> float:
        """The largest group LR (the head's, under layer-wise LR decay)."""
        return max(group["lr"] for group in self.optimizer.param_groups)

    def fit(self, run_dir: Path | None = None, resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train for ``train.epochs``, keep the best weights by val_acc (live or EMA), test them; returns the summary.

        ``resume``: a ``checkpoints/last.pt`` state of ``run_dir`` to continue from (see ``runs.resume``).
        Under torchrun every rank trains; rank 0 alone writes the run directory, prints and calls hooks.
        A run that stops on an error or Ctrl-C after ``vitkit_on_run_start`` calls ``vitkit_on_run_failed``.
        """
        self.announced = False  # vitkit_on_run_start was called and no end hook yet
        try:
            return self._train(run_dir, resume)
        except BaseException as err:
            if self.announced:
                self.announced = False
                interrupted = isinstance(err, KeyboardInterrupt)
                self.hooks.call_on_failure("vitkit_on_run_failed", run=self.run, error=err, interrupted=interrupted)
            raise

    def _train(self, run_dir: Path | None, resume: dict[str, Any] | None) -> dict[str, Any]:
        recipe, main = self.recipe, self.dist.is_main
        if main:
            run_dir = run_dir or new_run_dir(recipe)
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "recipe.toml").write_text(dump_toml(recipe.to_dict()))
            if self.data.split_record is not None:  # the files of each split: eval, compare, --resume reuse it
                write_split(self.data.split_record, run_dir / "split.json")
        run = Run(recipe, self.model, run_dir or Path("."), self.device, self.data.classes)
        self.run = run
        ranks = f" x {self.dist.world_size} processes ({self.strategy})" if self.dist.enabled else ""
        console.print(
            f"[bold]vitkit run[/] {recipe.name}: {recipe.model['name']} "
            f"({self.params / 1e6:.2f} M params) on {self.device}{ranks} "
            f"({self.precision}{', TF32 matmuls' if self.tf32 else ''}"
            f"{f', {self.threads} CPU thread' + 's' * (self.threads != 1) if self.device.type == 'cpu' else ''}), "
            f"{len(self.data.train)}/{len(self.data.val)}/{len(self.data.test)} train/val/test images "
            f"-> {run_dir}"
        )
        if main:
            self.hooks.vitkit_on_run_start(run=run)
            self.announced = True
        first_epoch, best_acc, best_loss, best_epoch = 1, -1.0, math.inf, 0
        self.best_state, self.best_weights = None, "model"
        if resume is not None:
            from vitkit.runs.resume import restore

            first_epoch, best_acc, best_loss, best_epoch = restore(self, resume)
            self.best_weights = resume.get("best_weights", "model")
            console.print(f"resuming after epoch {first_epoch - 1} from {run_dir / 'checkpoints' / 'last.pt'}")
        else:  # epoch 0: a run killed during its first epoch can resume too
            self._save(run_dir, 0, best_acc, best_epoch, run.history, False)
            if main:  # under torchrun: a restarted worker group finds this directory (engine.elastic)
                elastic.mark(run_dir, recipe)
        start = time.perf_counter() - (run.history[-1]["time"] if run.history else 0.0)
        epochs = recipe.train.epochs
        if recipe.train.compile == "auto":
            steps_left = len(self.train_loader) * (epochs - first_epoch + 1)
            self.compile_trial = CompileWhenPays(self.wrapped, steps_left, self.device)
            if self.compile_trial.decision is not None:
                console.print(self.compile_trial.line())
        if self.progressive is not None:
            console.print(self.progressive.line(), soft_wrap=True)
        with EpochProgress(epochs, len(self.train_loader)) as progress:
            for epoch in range(first_epoch, epochs + 1):
                progress.start_epoch(epoch, self.lr())
                row: dict[str, Any] = {"epoch": epoch}
                if self.progressive is not None:
                    row["train_size"] = self.progressive.apply(epoch, self.train_transform)
                row.update(self.train_epoch(epoch, progress))
                val = self._evaluate(self.model, self.val_loader, what=f"validation after epoch {epoch}")
                row.update(val_loss=val.loss, val_acc=val.acc)
                candidates = [("model", val)]
                if self.ema is not None:
                    ema_val = self._evaluate(
                        self.ema.module, self.val_loader, what=f"EMA validation after epoch {epoch}"
                    )
                    row.update(ema_val_loss=ema_val.loss, ema_val_acc=ema_val.acc)
                    candidates.append(("ema", ema_val))
                row.update(lr=self.lr(), time=time.perf_counter() - start)
                run.history.append(row)
                is_best = False
                for source, result in candidates:
                    if result.acc > best_acc or (result.acc == best_acc and result.loss < best_loss):
                        best_acc, best_loss, best_epoch, self.best_weights = result.acc, result.loss, epoch, source
                        is_best = True
                if is_best:
                    self.best_state = self._weights(self.best_weights)
                if hasattr(self.scheduler, "on_epoch_end"):
                    self.scheduler.on_epoch_end(row)
                self._save(run_dir, epoch, best_acc, best_epoch, run.history, is_best)
                if main:
                    write_metrics(run_dir, run.history)
                    progress.print(print_epoch(row, epochs, is_best))
                    self.hooks.vitkit_on_epoch_end(run=run, epoch=epoch, metrics=dict(row))
                dist.waiting_for(f"the stop decision after epoch {epoch} (rank 0 writes the epoch's outputs first)")
                if dist.broadcast_flag(run.should_stop, self.device):
                    console.print(f"stopping after epoch {epoch}: {run.stop_reason}")
                    break
        return self._finish(run, best_acc, best_epoch, time.perf_counter() - start)

    def _weights(self, source: str) -> dict[str, torch.Tensor]:
        """A CPU copy of the live (``model``) or EMA (``ema``) weights, whole even under FSDP."""
        if source == "ema":
            return {k: v.detach().cpu().clone() for k, v in self.ema.module.state_dict().items()}
        state = dist.full_state_dict(self.model, self.strategy)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    # --------------------------------------------------------------------------------- outputs

    def data_meta(self) -> dict[str, Any]:
        """What prediction needs to turn an image into this model's input."""
        return {
            "classes": self.data.classes,
            "in_chans": self.data.in_chans,
            "img_size": self.img_size,
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            **({"crop_pct": self.data.crop_pct, "interpolation": self.preprocessing.interpolation}
               if self.data.crop_pct else {}),
            **({"thresholds": self.thresholds} if getattr(self, "thresholds", None) else {}),
        }  # fmt: skip

    def _save(
        self, run_dir: Path, epoch: int, best_acc: float, best_epoch: int, history: list[dict[str, Any]], is_best: bool
    ) -> None:
        dist.waiting_for(f"the other processes to save epoch {epoch}'s checkpoint")
        model_state = self.best_state if is_best and self.best_weights == "model" else self._weights("model")
        optimizer_state = dist.full_optimizer_state_dict(self.model, self.optimizer, self.strategy)
        rng_ranks = dist.gather_to_main(capture_rng(self.device)) if self.dist.enabled else None
        if not self.dist.is_main:
            return
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "best_val_acc": best_acc,
            "best_epoch": best_epoch,
            "best_weights": self.best_weights,
            "history": history,
            "recipe": self.recipe.to_dict(),
            "data": self.data_meta(),
            "batch_size": self.batch_size,  # the resolved one (data.batch_size may be "auto")
            "rng": capture_rng(self.device),
        }
        if rng_ranks is not None:  # each rank's own RNG states (they differ by rank): resume restores them
            state["rng_ranks"] = rng_ranks
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if is_best:  # before last.pt: a kill in between redoes this epoch, identically, and rewrites best.pt
            best = {k: state[k] for k in ("epoch", "best_val_acc", "best_weights", "recipe", "data", "batch_size")}
            save_checkpoint({"model": self.best_state, **best}, run_dir / "checkpoints" / "best.pt")
        save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
        self.saved_epoch = epoch

    def _finish(self, run: Run, best_acc: float, best_epoch: int, wall: float) -> dict[str, Any]:
        run_dir = run.run_dir
        if self.best_state is None:  # e.g. a resumed run that found no better epoch: the file has it
            from vitkit.runs.checkpoint import load_checkpoint

            best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
            self.best_state, self.best_weights = best["model"], best.get("best_weights", "model")
        dist.load_full_state_dict(self.model, self.best_state, self.strategy)
        val = self._evaluate(self.model, self.val_loader, True, "the final validation")  # its logits: the temperature
        test = self._evaluate(self.model, self.test_loader, True, "the test evaluation") if self.score_test else None
        if self.data.multi_label:
            choose_thresholds(self, run_dir, val)
        self._leave_group()  # the last collective is behind: no rank waits while rank 0 writes the outputs
        if not self.dist.is_main:
            return {"test_acc": test.acc if test else None, "rank": self.dist.rank}
        temperature = calibrate(run_dir, val)
        return write_finished_run(self, run, best_acc, best_epoch, wall, val, test, temperature)

    def _leave_group(self) -> None:
        """Leave the process group together (a no-op in one process), after dropping the DDP wrapper, whose
        reducer holds the group (``distributed.shutdown`` collects it before tearing the group down)."""
        if self.dist.enabled and self.strategy == "ddp":
            self.wrapped = self.forward = self.model
            self.compile_trial = None
        dist.shutdown()
