"""K-fold cross-validation at the data level: the recipe key ``data.fold = "k/K"``.

A dataset's train and val are pooled (train first, then val), the pool is cut into K stratified
folds (fixed: the same for every seed, run and machine), and fold k becomes validation, the other
K - 1 training (``fold_indices``). The test split is left as it is, so every fold is scored on the
same test images. ``imagefolder`` folds its file lists (``fold_samples``) before decoding, so its
``split.json`` records the folded splits; other datasets are folded after loading
(``vitkit.data.fold_splits.apply_fold``).
"""

from __future__ import annotations

import re

import torch

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
