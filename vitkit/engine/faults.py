"""Numerical and resource faults during training, turned into one-line user errors that say what to change."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import torch

from vitkit.errors import UserError
from vitkit.recipe import Recipe

DISK_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class NonFiniteWatch:
    """Records the first step of an epoch whose loss is NaN or inf, on the device (no host sync per step).

    ``observe`` is called every step; ``due`` says when to look at the host (every step on CPU, every
    ``every`` steps on accelerators); ``first_bad`` then costs one sync.
    """

    def __init__(self, device: torch.device, every: int = 32) -> None:
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.every = 1 if device.type == "cpu" else every

    def observe(self, loss: torch.Tensor, step: int) -> None:
        bad = (self.first < 0) & ~torch.isfinite(loss.detach().float())
        self.first = torch.where(bad, torch.full_like(self.first, step), self.first)

    def due(self, step: int, steps: int) -> bool:
        return (step + 1) % self.every == 0 or step + 1 == steps

    def first_bad(self) -> int | None:
        """0-based index of the first non-finite step, or ``None``."""
        step = int(self.first)
        return None if step < 0 else step


def signal_at_test_point(epoch: int, step: int, rank: int = 0) -> None:
    """Test hook: ``VITKIT_TEST_SIGNAL_AT="EPOCH:STEP[:SIGNAL[:RANK]]"`` sends ``SIGNAL`` (``KILL``,
    ``INT``, ...; default ``KILL``) to this process when training reaches step ``STEP`` (1-based) of
    epoch ``EPOCH`` on rank ``RANK`` (default 0). Only torchrun's first attempt fires it (its restarts
    carry the same environment). Tests stop a run at a chosen point this way, never by timing."""
    spec = os.environ.get("VITKIT_TEST_SIGNAL_AT")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return
    parts = spec.split(":")
    at_epoch, at_step, name, at_rank = parts + ["KILL", "0"][len(parts) - 2 :]
    if (epoch, step, rank) == (int(at_epoch), int(at_step), int(at_rank)):
        os.kill(os.getpid(), getattr(signal, f"SIG{name.upper()}"))


def divergence_error(
    recipe: Recipe, precision: str, epoch: int, step: int, steps: int, saved_epoch: int | None
) -> UserError:
    """The error for a NaN/inf loss: where it happened, what survived, what to lower."""
    lr = recipe.optimizer.get("lr")
    hints = [f"lower optimizer.lr (now {lr:g})" if isinstance(lr, (int, float)) else "lower optimizer.lr"]
    if recipe.train.clip_grad <= 0:
        hints.append("set train.clip_grad = 1.0")
    if precision == "fp16":
        hints.append('use train.precision = "bf16" (or "fp32")')
    kept = "" if saved_epoch is None else f"; checkpoints/last.pt keeps epoch {saved_epoch}"
    return UserError(
        f"training diverged: the loss is NaN or inf at epoch {epoch}, step {step + 1} of {steps}{kept}; "
        + ", or ".join(hints)
    )


def scaler_step(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
    """``scaler.step`` + ``scaler.update``; True when fp16's scaler skipped the step (inf/NaN gradients).

    The scaler already syncs to decide, so reading its scale adds no stall.
    """
    if not scaler.is_enabled():
        optimizer.step()
        return False
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    return scaler.get_scale() < before


def out_of_memory_error(recipe: Recipe, device: Any, batch: int | None = None) -> UserError:
    """The error for a GPU out-of-memory: a smaller batch, the same effective batch via accumulation.

    ``batch``: the size the trainer resolved (``data.batch_size = "auto"``), if it got that far."""
    from vitkit.engine.autobatch import resolved_batch_size

    batch, accum = resolved_batch_size(recipe, batch), recipe.train.grad_accum_steps
    smaller = max(1, batch // 2)
    auto = " (auto)" if recipe.data.batch_size == "auto" else ""
    return UserError(
        f"{recipe.where()}: out of memory on {device} with data.batch_size = {batch}{auto}; set data.batch_size = "
        f"{smaller} and train.grad_accum_steps = {accum * 2} to keep the effective batch of {batch * accum} "
        f'(or use a smaller model or img_size, or train.precision = "bf16")'
    )


def disk_full_error(err: OSError, run_dir: Path | None, saved_epoch: int | None) -> UserError:
    """The error for a full disk while writing outputs; says which checkpoint survived."""
    where = f" under {run_dir}" if run_dir else ""
    name = f" ({err.filename})" if err.filename else ""
    kept = ""
    if run_dir is not None and saved_epoch is not None:
        kept = f"; checkpoints/last.pt (epoch {saved_epoch}) is intact: free space, then vitkit run --resume {run_dir}"
    return UserError(f"disk full while writing outputs{where}{name}: {err.strerror or err}{kept}")


def out_of_memory_types() -> tuple[type[BaseException], ...]:
    return (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), torch.cuda.OutOfMemoryError)
