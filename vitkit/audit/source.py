"""The audited images, as the one data path loaded them: each split's files in order (``split_record``)
and their stored base images (the decode cache, or the files decoded on the fly)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vitkit.audit.duplicates import Item
from vitkit.data.folder import SPLITS
from vitkit.errors import UserError


def items_of(data: Any) -> list[Item]:
    """Every image of a loaded imagefolder's splits (``DataSplits``), train, val, then test, in split order."""
    record = data.split_record
    if record is None:
        raise UserError("vitkit audit reads folders of image files (data.dataset = imagefolder)")
    root = Path(record["root"])
    index = {name: i for i, name in enumerate(record["classes"])}

    def label(cls: str | list[str]) -> int | tuple[int, ...]:
        return index[cls] if isinstance(cls, str) else tuple(index[c] for c in cls)  # a list: multi-label

    return [Item(root / rel, rel, split, label(cls)) for split in SPLITS for rel, cls in record[split]]


def cached(data: Any) -> bool:
    """Whether every split's base images sit in the decode cache (nothing to decode again)."""
    return all(getattr(data, split).in_memory for split in SPLITS)


def base_batches(data: Any, batch: int = 256) -> Iterator[torch.Tensor]:
    """The ``(B, C, S, S)`` uint8 base images of ``items_of(data)``, in that order."""
    for split in SPLITS:
        images = getattr(data, split)
        for start in range(0, len(images), batch):
            rows = range(start, min(start + batch, len(images)))
            if images.in_memory:
                yield images.images[torch.tensor(list(rows), dtype=torch.long)]
            else:
                yield torch.stack([images.files[i][0] for i in rows])
