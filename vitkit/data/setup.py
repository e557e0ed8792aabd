"""What the trainer sets up around a loaded dataset: transforms of imagefolder base images and class
balancing (``data.balance``). The normalisation and eval crop come from ``engine.build.preprocessing``."""

from __future__ import annotations

from typing import Any

from vitkit.data.datasets import DataSplits
from vitkit.data.loaders import Balancing, BatchTransform
from vitkit.errors import UserError
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


def apply_balance(recipe: Recipe, data: DataSplits, loader: Balancing, loss_fn: Any) -> dict[str, Any] | None:
    """``data.balance``: ``sampler`` draws training images with weights 1 / class count (each class equally
    often on average); ``loss`` weights each class's loss by ``mean count / its count``. The class counts
    and the weighted draws are the training loader's answer (``loaders.Balancing``); a loader that cannot
    give them is a ``UserError``. Returns what was applied (summary.json's ``balance``), ``None`` for ``none``."""
    mode = recipe.data.balance
    if mode == "none":
        return None
    where = f'{recipe.where()}: data.balance = "{mode}"'
    counts = loader.class_counts(len(data.classes)) if hasattr(loader, "class_counts") else None
    if counts is None:
        raise UserError(f'{where}: {_uncounted(recipe)}; set data.balance = "none"')
    some = counts.clamp(min=1)  # a class with no training image: weight as if it had one
    if mode == "sampler":
        if not hasattr(loader, "set_class_weights"):
            raise UserError(f'{where}: the {type(loader).__name__} training loader cannot draw by weights; use "loss"')
        weights = 1.0 / some
        loader.set_class_weights(weights)
    else:
        if not hasattr(loss_fn, "class_weight"):
            raise UserError(f"{where} needs a loss with class weights (cross_entropy)")
        weights = some.mean() / some
        loss_fn.class_weight = weights
    return {
        "mode": mode,
        "class_counts": {name: int(n) for name, n in zip(data.classes, counts.tolist(), strict=True)},
        "class_weights": {name: round(float(w), 6) for name, w in zip(data.classes, weights.tolist(), strict=True)},
    }


def _uncounted(recipe: Recipe) -> str:
    """Why the training data has no class counts, in words."""
    from vitkit.registry import split_spec

    name = split_spec(recipe.data.dataset)[0]
    if name == "webdataset":
        return (
            "the shards' _info.json records no class_counts (shards written before vitkit recorded them, or by "
            "another tool); rewrite them with `vitkit shards`"
        )
    return f"the training data ({name}) does not list its images' classes"
