"""``data.fold`` for datasets loaded whole (digits, CIFAR, a plugin's): their loaded train and val splits
pooled and re-cut with ``vitkit.data.folds.fold_indices`` (``imagefolder`` folds its file lists before
loading instead)."""

from __future__ import annotations

import copy

import torch

from vitkit.data.cache import CachedImages
from vitkit.data.datasets import DataSplits, ImageSet
from vitkit.data.folds import fold_indices, parse_fold
from vitkit.errors import UserError


def _labels(split: ImageSet) -> torch.Tensor:
    if split.in_memory:
        return split.labels
    samples = getattr(split.files, "samples", None)
    if samples is None:
        raise UserError("data.fold: this dataset's files carry no (path, label) samples to stratify")
    return torch.tensor([label for _, label in samples], dtype=torch.long)


def _tensor(images: torch.Tensor | CachedImages) -> torch.Tensor:
    """The images as one tensor (rows of a decoded-image cache are gathered)."""
    return images if isinstance(images, torch.Tensor) else images[torch.arange(len(images))]


def _same(a: ImageSet, b: ImageSet) -> bool:
    """Whether two splits hold the same images (a dataset without a test split scores on val)."""
    if a is b:
        return True
    if isinstance(a.images, CachedImages) and isinstance(b.images, CachedImages):
        return a.images.store is b.images.store and torch.equal(a.images.rows, b.images.rows)
    if a.in_memory and b.in_memory:
        x, y = _tensor(a.images), _tensor(b.images)
        return a.images is b.images or (x.shape == y.shape and torch.equal(x, y))
    samples = getattr(a.files, "samples", None)
    return samples is not None and samples == getattr(b.files, "samples", None)


def _take(train: ImageSet, val: ImageSet, index: torch.Tensor) -> ImageSet:
    """Pooled train+val items ``index`` as a new split (file lists are copied, never shared)."""
    if train.in_memory:
        labels = torch.cat([train.labels, val.labels])
        store = getattr(train.images, "store", None)
        if store is not None and store is getattr(val.images, "store", None):  # one decoded-image cache: no copy
            rows = torch.cat([train.images.rows, val.images.rows])
            return ImageSet(CachedImages(store, rows[index]), labels[index])
        images = torch.cat([_tensor(train.images), _tensor(val.images)])
        return ImageSet(images[index], labels[index])
    pool = [*train.files.samples, *val.files.samples]
    files = copy.copy(train.files)
    files.samples = [pool[i] for i in index.tolist()]
    files.augment = []
    return ImageSet(files=files)


def apply_fold(splits: DataSplits, fold: str) -> DataSplits:
    """Splits with train+val re-cut as fold k of K (``fold = "k/K"``); the test split untouched."""
    k, total = parse_fold(fold)
    if _same(splits.test, splits.val):
        raise UserError(
            "data.fold: this dataset's test split is its validation split; folds need a separate test split"
        )
    if splits.train.in_memory != splits.val.in_memory:
        raise UserError("data.fold: train and val are stored differently; they cannot be pooled")
    labels = torch.cat([_labels(splits.train), _labels(splits.val)])
    rest, held = fold_indices(labels, fold)
    folded = copy.copy(splits)
    folded.train, folded.val = _take(splits.train, splits.val, rest), _take(splits.train, splits.val, held)
    folded.notes = [*splits.notes, f"fold {k}/{total}: {len(held)} val, {len(rest)} train images (pooled)"]
    return folded
