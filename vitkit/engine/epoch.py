"""One training epoch: micro-batches through the model under autocast, gradient accumulation and clipping,
optimizer and scheduler steps, EMA, the per-step hook; returns the epoch's training metrics.
``trainer`` is the ``engine.trainer.Trainer`` whose model, loader, optimizer and settings it uses."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch

from vitkit.engine import distributed as dist
from vitkit.engine.console import EpochProgress
from vitkit.engine.device import autocast
from vitkit.engine.faults import NonFiniteWatch, divergence_error, scaler_step, signal_at_test_point
from vitkit.testing import stall_at_test_point


def compute_loss(trainer: Any, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, class logits) for one micro-batch; a model may return (logits, dist_logits) (DeiT)."""
    if trainer.recipe.train.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    outputs = trainer.forward(images)
    if getattr(trainer.loss_fn, "needs_images", False):  # distillation runs the teacher on the same images
        loss = trainer.loss_fn(outputs, targets, images)
    else:
        loss = trainer.loss_fn(outputs[0] if isinstance(outputs, (tuple, list)) else outputs, targets)
    return loss, outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def clip_gradients(trainer: Any) -> None:
    clip = trainer.recipe.train.clip_grad
    if clip <= 0:
        return
    trainer.scaler.unscale_(trainer.optimizer)
    if trainer.recipe.train.clip_mode == "value":
        torch.nn.utils.clip_grad_value_(trainer.model.parameters(), clip)
    else:
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), clip)


def train_epoch(trainer: Any, epoch: int, progress: EpochProgress) -> dict[str, float]:
    """Train ``trainer``'s model one epoch over its loader; (summed over ranks) loss, accuracy, img/s, time."""
    accum = trainer.recipe.train.grad_accum_steps
    trainer.model.train()
    if isinstance(trainer.loss_fn, torch.nn.Module):
        trainer.loss_fn.train()
    trainer.train_loader.set_epoch(epoch)
    loss_sum = torch.zeros((), device=trainer.device)
    correct = torch.zeros((), device=trainer.device)
    seen = 0
    start = time.perf_counter()
    steps = len(trainer.train_loader)
    watch, skipped = NonFiniteWatch(trainer.device), 0
    step_hook = trainer.dist.is_main and trainer.hooks.implemented("vitkit_on_train_step")
    trial = trainer.compile_trial if trainer.compile_trial and not trainer.compile_trial.decision else None
    for step, (images, targets) in enumerate(trainer.train_loader):
        signal_at_test_point(epoch, step + 1, trainer.dist.rank)
        stall_at_test_point("step", epoch, step + 1, trainer.dist.rank)
        dist.waiting_for(f"the gradients of epoch {epoch}, step {step + 1} of {steps}")
        if trial is not None:
            trial.before_step()
        update = (step + 1) % accum == 0 or step + 1 == steps
        group = min(accum, steps - step // accum * accum)  # the last group of an epoch may be shorter
        # DDP: all-reduce gradients only on the micro-step that updates
        sync = contextlib.nullcontext() if update or trainer.strategy != "ddp" else trainer.wrapped.no_sync()
        with sync:
            with autocast(trainer.device, trainer.precision):
                loss, logits = trainer._compute_loss(images, targets)  # the trainer's: a subclass may override it
            watch.observe(loss, step)
            if watch.due(step, steps) and (bad := watch.first_bad()) is not None:
                raise divergence_error(trainer.recipe, trainer.precision, epoch, bad, steps, trainer.saved_epoch)
            trainer.scaler.scale(loss / group).backward()
        if update:
            trainer._clip()
            lr = trainer.lr() if step_hook else 0.0  # the LR this update uses (the scheduler moves it next)
            skipped += scaler_step(trainer.scaler, trainer.optimizer)
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer.scheduler.step()
            if trainer.ema is not None:
                trainer.ema.update(trainer.model)
            if step_hook:
                update_step = (epoch - 1) * trainer.steps_per_epoch + math.ceil((step + 1) / accum)
                trainer.hooks.vitkit_on_train_step(
                    run=trainer.run, epoch=epoch, step=update_step, lr=lr, loss=loss.detach()
                )
        loss_sum += loss.detach() * len(targets)
        if trainer.data.multi_label:  # the top-scored label is one of the image's
            correct += targets.gather(1, logits.detach().argmax(dim=1, keepdim=True)).gt(0).sum()
        else:
            labels = targets if targets.ndim == 1 else targets.argmax(dim=1)  # soft targets: their top class
            correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += len(targets)
        progress.advance(step + 1, loss_sum, seen)
        if trial is not None:
            decided = trial.after_step()
            trainer.forward = trial.forward  # the next step runs (and is timed) through the model the trial chose
            if decided:
                progress.print(trial.line())
    elapsed = time.perf_counter() - start
    dist.waiting_for(f"the training sums of epoch {epoch} (every rank runs {steps} steps)")
    loss_total, correct_total, seen_total = dist.all_reduce_sum(
        [float(loss_sum), float(correct), seen], trainer.device
    ).tolist()
    train_loss = loss_total / seen_total
    return {
        "train_loss": train_loss,
        "train_acc": correct_total / seen_total,
        "img_per_s": seen_total / elapsed,
        "train_time": elapsed,
        "skipped_steps": skipped,
    }
