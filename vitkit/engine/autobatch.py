"""``data.batch_size = "auto"``: the largest power-of-two batch that trains without running out of GPU memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

CPU_DEFAULT = 64


def resolved_batch_size(recipe: Any, found: int | None = None) -> int:
    """The batch size a recipe trains with: ``data.batch_size``, or for ``"auto"`` the size the trainer
    found (``found``, saved in its checkpoints) or, before one was found, the off-GPU default."""
    size = recipe.data.batch_size
    if size != "auto":
        return int(size)
    return int(found) if found else CPU_DEFAULT


def find_batch_size(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    num_classes: int,
    device: torch.device,
    autocast: Callable[[], object],
    limit: int,
    start: int = 1024,
) -> tuple[int, str]:
    """``(batch size, how it was chosen)``: on a GPU, halve from ``start`` on out-of-memory; elsewhere a default.

    Each try runs one forward and backward pass at the size (activations dominate ViT memory);
    the found size is then halved once more for headroom (optimizer state, fragmentation, eval).
    """
    if device.type != "cuda":
        size = min(CPU_DEFAULT, limit)
        return size, f"data.batch_size = auto: {size} (the default off GPU; set a number to change it)"
    size = min(start, limit)
    while size >= 2:
        try:
            images = torch.randn(size, *sample_shape, device=device)
            targets = torch.randint(0, num_classes, (size,), device=device)
            with autocast():
                out = model(images)
                out = out[0] if isinstance(out, (tuple, list)) else out
                loss = nn.functional.cross_entropy(out.float(), targets)
            loss.backward()
            model.zero_grad(set_to_none=True)
            del images, targets, out, loss
            torch.cuda.empty_cache()
            chosen = max(1, size // 2)
            return chosen, f"data.batch_size = auto: {chosen} (a batch of {size} fits; half of it for headroom)"
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            size //= 2
    return 1, "data.batch_size = auto: 1 (even 2 images did not fit)"
