"""``train.progressive``: progressive resizing (fastai's practice, FFCV's and timm's ``dynamic_img_size``
models): train on smaller images early, at ``model.img_size`` at the end.

Only the training batches change size: the data is loaded (and cached) once at ``model.img_size``, and
the train transform resizes (or random-resize-crops) each batch to the epoch's size on the device.
Validation, test and the saved model stay at ``model.img_size``. The model takes the smaller images
through ``set_dynamic_img_size`` (learned positions resampled, fixed and rotary ones recomputed; its
parameters keep ``img_size``'s shapes, so optimizer, EMA and checkpoints are those of a plain run).
Batch size, steps per epoch and so the LR schedule are the same at every size. The size is a function
of the epoch alone, so a resumed run trains at the size the uninterrupted one had.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from vitkit.errors import UserError
from vitkit.recipe import ProgressiveConfig


def epoch_sizes(config: ProgressiveConfig, img_size: int, patch_size: int, epochs: int, where: str) -> list[int]:
    """The training image size of each epoch (index 0: epoch 1).

    ``start``/``until``: the first ``round(until * epochs)`` epochs grow linearly from ``start * img_size``
    towards ``img_size`` (rounded down to a multiple of ``patch_size``), the rest train at ``img_size``.
    ``sizes``: ``[epoch, size]`` pairs, each size from its epoch on (``img_size`` before the first).
    """
    key = f"{where}: train.progressive"
    if config.sizes:
        if config.start != 1.0:
            raise UserError(f"{key}: give start (and until) or sizes, not both")
        pairs = sorted(config.sizes)
        epochs_given = [epoch for epoch, _ in pairs]
        if len(set(epochs_given)) != len(epochs_given):
            raise UserError(f"{key}.sizes: an epoch appears twice: {config.sizes}")
        for epoch, size in pairs:
            if size % patch_size or size > img_size:
                raise UserError(
                    f"{key}.sizes: [{epoch}, {size}]: sizes must be multiples of the patch size {patch_size} "
                    f"and at most model.img_size {img_size}"
                )
        sizes = []
        for epoch in range(1, epochs + 1):
            sizes.append(next((size for first, size in reversed(pairs) if first <= epoch), img_size))
        return sizes
    if config.start == 1.0:
        return [img_size] * epochs
    ramp = max(1, round(config.until * epochs))
    sizes = []
    for epoch in range(1, epochs + 1):
        if epoch > ramp:
            sizes.append(img_size)
            continue
        share = config.start + (1.0 - config.start) * (epoch - 1) / ramp
        sizes.append(max(patch_size, math.floor(share * img_size / patch_size) * patch_size))
    return sizes


def patch_size_of(model: nn.Module) -> int | None:
    """The model's patch size (vitkit's and timm's ViTs), ``None`` when it has none."""
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return size if isinstance(size, int) else None


def enable_dynamic_img_size(model: nn.Module, where: str) -> None:
    """Let the model take the smaller training images; a model that cannot is a user error."""
    name = type(model).__name__
    setter = getattr(model, "set_dynamic_img_size", None)
    if setter is not None:
        setter(True)
    elif not getattr(model, "dynamic_img_size", False):  # timm models: a constructor option
        hint = " (timm models: set model.dynamic_img_size = true)" if hasattr(model, "dynamic_img_size") else ""
        raise UserError(f"{where}: train.progressive: {name} takes only model.img_size images{hint}")


class Progressive:
    """The schedule of a run: ``size(epoch)``, and ``apply(epoch, transform)`` sets the train transform's size."""

    def __init__(self, sizes: list[int], img_size: int) -> None:
        self.sizes, self.img_size = sizes, img_size

    def size(self, epoch: int) -> int:
        return self.sizes[min(epoch, len(self.sizes)) - 1]

    def apply(self, epoch: int, transform: Any) -> int:
        """Set ``transform`` (a ``BatchTransform``) and its random-resized crop to ``size(epoch)``; returns it."""
        size = self.size(epoch)
        transform.img_size = size
        if hasattr(transform.crop, "size"):
            transform.crop.size = size
        return size

    def line(self) -> str:
        """The schedule in one line: each size with its epochs."""
        spans: list[tuple[int, int, int]] = []  # (size, first epoch, last epoch)
        for epoch, size in enumerate(self.sizes, start=1):
            if spans and spans[-1][0] == size:
                spans[-1] = (size, spans[-1][1], epoch)
            else:
                spans.append((size, epoch, epoch))
        parts = [f"{size} px (epoch{'s' * (a != b)} {a}{f'-{b}' if a != b else ''})" for size, a, b in spans]
        return f"train.progressive: {', '.join(parts)}; evaluation at {self.img_size} px"


def progressive(recipe: Any, model: nn.Module, img_size: int) -> Progressive | None:
    """``train.progressive`` of ``recipe`` for ``model``: the schedule (the model set to take its sizes),
    or ``None`` when it is off."""
    config = recipe.train.progressive
    if config.start == 1.0 and not config.sizes:
        return None
    where = recipe.where()
    patch = patch_size_of(model)
    if patch is None:
        raise UserError(f"{where}: train.progressive: {type(model).__name__} has no patch size to resize by")
    sizes = epoch_sizes(config, img_size, patch, recipe.train.epochs, where)
    enable_dynamic_img_size(model, where)
    return Progressive(sizes, img_size)
