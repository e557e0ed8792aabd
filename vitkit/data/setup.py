"""What the trainer sets up around a loaded dataset: transforms of imagefolder base images and class
balancing (``data.balance``). The normalisation and eval crop come from ``engine.build.preprocessing``."""

from __future__ import annotations

from typing import Any

import torch

from vitkit.data.datasets import DataSplits
from vitkit.data.loaders import BatchTransform
from vitkit.recipe import Recipe


def batch_transforms(
    recipe: Recipe, data: DataSplits, img_size: int, augments: list[Any]
) -> tuple[BatchTransform, BatchTransform]:
    """(train, eval) transforms. imagefolder bases (``data.crop_pct`` set): training takes a random-resized
    crop (``data.crop_scale``) or the centre (``data.train_crop``), then a flip (``data.hflip``), then
    the recipe's augmentations; evaluation takes the centred ``img_size`` crop."""
    from vitkit.data.loaders import eval_transform

    evaluation = eval_transform({"img_size": img_size, "mean": data.mean, "std": data.std, "crop_pct": data.crop_pct})
    if not data.crop_pct:
        return BatchTransform(img_size, data.mean, data.std, augments), evaluation
    from vitkit.data.augment import HorizontalFlip
    from vitkit.data.crops import BatchRandomResizedCrop

    cfg = recipe.data
    crop = (
        BatchRandomResizedCrop(img_size, (cfg.crop_scale, 1.0)) if cfg.train_crop == "random_resized_crop" else "center"
    )
    flips = [HorizontalFlip(cfg.hflip)] if cfg.hflip > 0 else []
    train = BatchTransform(img_size, data.mean, data.std, [*flips, *augments], crop=crop)
    return train, evaluation


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels.cpu(), minlength=num_classes).float()


def train_labels(data: DataSplits) -> torch.Tensor:
    split = data.train
    if split.in_memory:
        return split.labels
    return torch.tensor([label for _, label in split.files.samples], dtype=torch.long)


def apply_balance(recipe: Recipe, data: DataSplits, loader: Any, loss_fn: Any) -> None:
    """``data.balance``: ``sampler`` draws training images with weights 1 / class count (each class equally
    often on average); ``loss`` weights each class's loss by ``mean count / its count``."""
    mode = recipe.data.balance
    if mode == "none":
        return
    labels = train_labels(data)
    counts = class_counts(labels, len(data.classes)).clamp(min=1)
    if mode == "sampler":
        loader.sample_weights = (1.0 / counts)[labels]
    else:
        from vitkit.errors import UserError

        weights = counts.mean() / counts
        if not hasattr(loss_fn, "class_weight"):
            raise UserError(f'{recipe.where()}: data.balance = "loss" needs a loss with class weights (cross_entropy)')
        loss_fn.class_weight = weights
