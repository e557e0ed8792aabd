"""Multi-label images: several labels per image, as a ``labels.csv`` with ``path,labels`` (``a;b``).

A multi-label sample's label is the sorted tuple of its class indices (a single-label one's is an
``int``); batches carry it as a multi-hot float row ``(classes,)``. Splits carved from train are
stratified by each image's rarest label (``strata``). The metrics (average precision, per-class
F1 at per-class thresholds chosen on val, exact match) are in ``vitkit.evaluation.multilabel_report``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from vitkit.data.imageio import is_image_name
from vitkit.errors import UserError

SEPARATOR = ";"  # between the labels of one image in the CSV's ``labels`` column
Label = int | tuple[int, ...]


def is_multi_label(label: Any) -> bool:
    """Whether a sample's label is a multi-label one (a tuple of class indices)."""
    return isinstance(label, tuple)


def label_ids(label: Label) -> tuple[int, ...]:
    """The class indices of a sample's label, single- or multi-label."""
    return label if isinstance(label, tuple) else (int(label),)


def label_names(label: Label, classes: Sequence[str]) -> str | list[str]:
    """A label as ``split.json`` writes it: a class name, or the list of them for a multi-label image."""
    return [classes[i] for i in label] if isinstance(label, tuple) else classes[label]


def label_from_names(names: str | list[str], index: dict[str, int]) -> Label:
    """The inverse of ``label_names``."""
    return tuple(sorted(index[n] for n in names)) if isinstance(names, list) else index[names]


def multi_hot(labels: Iterable[tuple[int, ...]], num_classes: int) -> torch.Tensor:
    """``(N, classes)`` float rows, 1 at each image's classes."""
    rows = list(labels)
    out = torch.zeros(len(rows), num_classes)
    for i, ids in enumerate(rows):
        out[i, list(ids)] = 1.0
    return out


def split_labels(text: str) -> list[str]:
    """The labels of one CSV cell ``a;b``: stripped, empty parts dropped, each once."""
    return sorted({part.strip() for part in text.split(SEPARATOR) if part.strip()})


def read_multilabel_rows(
    rows: list[dict[str, str]], csv_path: Path
) -> tuple[list[str], list[tuple[Path, tuple[int, ...]]]]:
    """Classes (sorted) and samples of a ``path,labels`` CSV's rows; a file listed twice gets the union
    of its labels."""
    entries: dict[Path, set[str]] = {}
    for n, row in enumerate(rows, start=2):
        rel, names = (row.get("path") or "").strip(), split_labels(row.get("labels") or "")
        if not rel or not names:
            raise UserError(f"imagefolder: {csv_path} line {n}: empty path or labels")
        if not is_image_name(rel) or any(p.startswith(".") for p in Path(rel).parts):
            continue
        path = csv_path.parent / rel
        if not path.is_file():
            raise UserError(f"imagefolder: {csv_path} line {n}: {path} does not exist")
        entries.setdefault(Path(os.path.normpath(path)), set()).update(names)
    classes = sorted(set().union(*entries.values())) if entries else []
    if not classes:
        raise UserError(f"imagefolder: {csv_path} lists no image files")
    index = {name: i for i, name in enumerate(classes)}
    return classes, [(path, tuple(sorted(index[n] for n in names))) for path, names in entries.items()]


def strata(samples: Sequence[tuple[Path, Label]]) -> list[int]:
    """The class each sample is stratified by when splits are carved: its own (single-label), or its
    rarest label (multi-label), so every class still reaches each carved split."""
    counts = Counter(i for _, label in samples for i in label_ids(label))
    return [min(label_ids(label), key=lambda i: (counts[i], i)) for _, label in samples]


def batch_targets(samples: Sequence[tuple[Any, Label]], num_classes: int) -> torch.Tensor:
    """The targets of samples as a loader yields them: class indices ``(N,)`` or multi-hot ``(N, classes)``."""
    labels = [label for _, label in samples]
    if labels and is_multi_label(labels[0]):
        return multi_hot(labels, num_classes)
    return torch.tensor(labels, dtype=torch.long)


def check_multi_label(recipe: Any, loss_fn: Any) -> None:
    """Multi-label data trains with a per-class sigmoid loss (``bce``, ``asl``), never softmax
    cross-entropy, and without mixup/cutmix or ``data.balance`` (made for one class per image)."""
    where = f"{recipe.where()}: the data is multi-label (several labels per image)"
    if not getattr(loss_fn, "multi_label", False):
        raise UserError(f'{where}: set loss = "bce" or loss = "asl"')
    if recipe.augment.mixup > 0 or recipe.augment.cutmix > 0:
        raise UserError(f"{where}: augment.mixup and augment.cutmix are not supported with it; set them to 0")
    if recipe.data.balance != "none":
        raise UserError(f'{where}: data.balance is not supported with it; set data.balance = "none"')
