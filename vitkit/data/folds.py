"""K-fold cross-validation at the data level: the recipe key ``data.fold = "k/K"``.

A dataset's train and val are pooled (train first, then val), the pool is cut into K stratified
folds (fixed: the same for every seed, run and machine), and fold k becomes validation, the other
K - 1 training (``fold_indices``). The test split is left as it is, so every fold is scored on the
same test images. ``imagefolder`` folds its file lists (``fold_samples``) before decoding, so its
``split.json`` records the folded splits; other datasets are folded after loading (``apply_fold``).
"""

from __future__ import annotations

import copy
import re

import torch

from vitkit.data.cache import CachedImages
from vitkit.data.datasets import DataSplits, ImageSet
from vitkit.errors import UserError

FOLD_SEED = 2  # fixed; independent of the run's seed, so folds match across variants and seeds


def parse_fold(text: str) -> tuple[int, int]:
    """``"2/5"`` -> ``(2, 5)``: fold k (1-based) of K, with 1 <= k <= K and K >= 2."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UserError(f'data.fold = {text!r}: expected "k/K", e.g. "1/5" (fold 1 of 5)')
    k, total = int(match[1]), int(match[2])
    if total < 2 or not 1 <= k <= total:
        raise UserError(f'data.fold = {text!r}: expected 1 <= k <= K and K >= 2, e.g. "1/5"')
    return k, total


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = FOLD_SEED) -> list[torch.Tensor]:
    """``folds`` disjoint index sets covering ``labels``; each class is dealt round-robin after a fixed shuffle."""
    g = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in range(folds)]
    offset = 0
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        for i in range(folds):  # classes start where the last one stopped: fold sizes stay within 1
            parts[(offset + i) % folds].append(idx[i::folds])
        offset += len(idx)
    return [torch.cat(p).sort().values for p in parts]


def fold_indices(labels: torch.Tensor, fold: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)`` indices into the pooled train+val ``labels`` for ``fold = "k/K"``."""
    k, total = parse_fold(fold)
    parts = stratified_folds(labels, total)
    rest = torch.cat([p for i, p in enumerate(parts) if i != k - 1]).sort().values
    return rest, parts[k - 1]


def fold_samples(splits: dict[str, list], fold: str) -> dict[str, list]:
    """File splits (``{split: [(path, label), ...]}``) with train+val re-cut as fold k of K; test untouched."""
    pool = [*splits["train"], *splits["val"]]
    rest, held = fold_indices(torch.tensor([label for _, label in pool], dtype=torch.long), fold)
    return {**splits, "train": [pool[i] for i in rest.tolist()], "val": [pool[i] for i in held.tolist()]}


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
