"""The facts of a folder: images per class and split, class balance, image sizes and aspect ratios,
grey/CMYK/alpha images; and each file's decoded-pixel digest (read in the same pass)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitkit.audit.duplicates import Item, pixel_digest
from vitkit.data.folder import SPLITS
from vitkit.data.multilabel import label_ids

GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


@dataclass(frozen=True)
class FileFacts:
    """One decoded file (EXIF orientation applied): its size, PIL mode, alpha, and pixel digest."""

    width: int
    height: int
    mode: str
    alpha: bool
    digest: str


def file_facts(item: Item) -> FileFacts:
    """Decode one file with vitkit's reader (``open_image``, full size) and describe it."""
    from vitkit.data.imageio import open_image

    img = open_image(item.path)
    alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    return FileFacts(img.size[0], img.size[1], img.mode, alpha, pixel_digest(img))


def read_facts(items: Sequence[Item], workers: int = 2) -> list[FileFacts]:
    """``file_facts`` of every item (threads: PIL decodes without the GIL)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(file_facts, items))


def class_counts(items: Sequence[Item], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """``{class: {train, val, test, total}}`` image counts."""
    counts = {cls: dict.fromkeys((*SPLITS, "total"), 0) for cls in classes}
    for item in items:
        for label in label_ids(item.label):  # a multi-label image counts in each of its classes
            counts[classes[label]][item.split] += 1
            counts[classes[label]]["total"] += 1
    return counts


def balance(counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The smallest and largest class (totals) and their ratio (1: balanced)."""
    totals = {cls: row["total"] for cls, row in counts.items()}
    small, large = min(totals, key=totals.__getitem__), max(totals, key=totals.__getitem__)
    ratio = totals[large] / totals[small] if totals[small] else float("inf")
    return {"smallest": small, "smallest_count": totals[small], "largest": large, "largest_count": totals[large],
            "ratio": round(ratio, 3)}  # fmt: skip


def image_facts(facts: Sequence[FileFacts]) -> dict[str, Any]:
    """Sizes (min/median/max width and height), aspect ratios (width/height: min/median/max, and counts of
    portrait < 0.9 <= square <= 1.1 < landscape), and counts of grey, CMYK and alpha images."""
    if not facts:
        return {}
    w = np.array([f.width for f in facts])
    h = np.array([f.height for f in facts])
    aspect = w / h

    def spread(values: np.ndarray) -> dict[str, float]:
        return {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max())}

    return {
        "width": spread(w),
        "height": spread(h),
        "aspect_ratio": {k: round(v, 3) for k, v in spread(aspect).items()},
        "orientation": {
            "portrait": int((aspect < 0.9).sum()),
            "square": int(((aspect >= 0.9) & (aspect <= 1.1)).sum()),
            "landscape": int((aspect > 1.1).sum()),
        },
        "modes": {
            "grey": sum(f.mode in GREY_MODES for f in facts),
            "cmyk": sum(f.mode == "CMYK" for f in facts),
            "alpha": sum(f.alpha for f in facts),
        },
    }
