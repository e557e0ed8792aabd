"""``data.batch_size = "auto"``: the largest power-of-two batch that trains without running out of GPU memory."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch

CPU_DEFAULT = 64


def resolved_batch_size(recipe: Any, found: int | None = None) -> int:
    """The batch size a recipe trains with: ``data.batch_size``, or for ``"auto"`` the size the trainer
    found (``found``, saved in its checkpoints) or, before one was found, the off-GPU default."""
    size = recipe.data.batch_size
    if size != "auto":
        return int(size)
    return int(found) if found else CPU_DEFAULT


def even_half(size: int) -> int:
    """Half of a batch that fit, rounded down to an even number (mixup/cutmix need pairs), at least 2."""
    return max(2, size // 2 - (size // 2) % 2)


def free_cuda_memory() -> None:
    """Return cached blocks to the GPU (after a try's tensors and exception are gone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def find_batch_size(
    step: Callable[[int], object],
    device: torch.device,
    limit: int,
    start: int = 1024,
    free: Callable[[], None] = free_cuda_memory,
) -> tuple[int, str]:
    """``(batch size, how it was chosen)``: on a GPU, halve from ``start`` on out-of-memory; elsewhere a default.

    ``step(size)`` runs one real training step at that size (the trainer's: forward, backward,
    optimizer and EMA update, distillation teacher, compile), leaving no trace. ``free`` runs after
    each try, outside the ``except`` block (whose traceback would keep the activations alive). The
    found size is halved for headroom (fragmentation, evaluation) and kept even.
    """
    if device.type != "cuda":
        size = min(CPU_DEFAULT, limit)
        return size, f"data.batch_size = auto: {size} (the default off GPU; set a number to change it)"
    size = min(start, limit)
    while size >= 2:
        fits = False
        try:
            step(size)
            fits = True
        except torch.OutOfMemoryError:
            pass  # leave the except block before freeing: its traceback holds the try's activations
        free()
        if fits:
            chosen = even_half(size)
            return chosen, f"data.batch_size = auto: {chosen} (a training step of {size} fits; half of it for headroom)"
        size //= 2
    return 2, "data.batch_size = auto: 2 (even 2 images did not fit; expect out-of-memory)"


def probe_step(trainer: Any, size: int) -> None:
    """A training step of ``trainer`` at ``size`` random images: forward (compiled, with a distillation
    teacher), backward, optimizer step (its state allocated), EMA update; then the weights, optimizer,
    EMA, scaler and RNG states are put back. Several processes probe their unwrapped model: a rank
    that runs out of memory alone must not leave the others waiting in a collective."""
    import copy

    from vitkit.engine.device import autocast

    device, model = trainer.device, trainer.model
    saved = {
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "scaler": trainer.scaler.state_dict(),
        "ema": copy.deepcopy(trainer.ema.state_dict()) if trainer.ema is not None else None,
    }
    forward = trainer.forward
    if trainer.dist.enabled:
        trainer.forward = model
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices, device_type=device.type if rng_devices else "cuda"):
            model.train()
            images = torch.randn(size, trainer.data.in_chans, trainer.img_size, trainer.img_size, device=device)
            targets = torch.randint(0, len(trainer.data.classes), (size,), device=device)
            with autocast(device, trainer.precision):
                loss, _ = trainer._compute_loss(images, targets)
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
            if trainer.ema is not None:
                trainer.ema.update(model)
    finally:
        trainer.forward = forward
        trainer.optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.scaler.load_state_dict(saved["scaler"])
        if saved["ema"] is not None:
            trainer.ema.load_state_dict(saved["ema"])
