"""The audit every run on a folder makes (``fast_audit``): duplicate groups and leaks from the base images
already in the decode cache, no file read or decoded again. ``vitkit audit`` adds the rest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vitkit.audit.duplicates import (
    NEAR_CORRELATION,
    NEAR_THRESHOLD,
    Signatures,
    base_digests,
    duplicate_groups,
    leaked_images,
    signatures,
)

RUN_NEAR_LIMIT = 20_000  # a run looks for near copies up to this many images (exact copies always)


def read_signatures(data: Any, digests: bool) -> tuple[list[str], Signatures]:
    """(base-image digests or ``[]``, near-copy signatures) of the data's images, in ``items_of`` order."""
    from vitkit.audit.source import base_batches

    found: list[str] = []
    parts = []
    for batch in base_batches(data):
        parts.append(signatures(batch))
        if digests:
            found += base_digests(batch)
    return found, Signatures.join(parts)


def leak_counts(groups: list[dict[str, Any]]) -> dict[str, int]:
    return {"groups": sum(g["leak"] for g in groups), **leaked_images(groups)}


def settings(threshold: int, exact: str) -> dict[str, Any]:
    return {
        "exact": exact,
        "near": "64-bit DCT perceptual hash of the stored base image, confirmed by 16x16 thumbnail correlation",
        "near_threshold": threshold,
        "near_correlation": NEAR_CORRELATION,
    }


def fast_audit(data: Any) -> dict[str, Any] | None:
    """A run's audit of its folder: duplicate groups and leaks from the decode cache's base images (exact:
    the same base image; near: pHash, up to ``RUN_NEAR_LIMIT`` images), no file read again. ``None``: not a
    folder, or streamed (no cache)."""
    from vitkit.audit.source import cached, items_of

    if data.split_record is None or not cached(data):
        return None
    items = items_of(data)
    digests, sig = read_signatures(data, digests=True)
    near = len(items) <= RUN_NEAR_LIMIT  # comparing all pairs grows with the square of the images
    groups = duplicate_groups(items, data.classes, digests, sig, NEAR_THRESHOLD if near else -1)
    return {
        "duplicates": groups,
        "leaks": leak_counts(groups),
        "settings": settings(NEAR_THRESHOLD, "same stored base image"),
    }


def run_audit(data: Any, run_dir: Path) -> dict[str, Any] | None:
    """A run's ``fast_audit``, written to ``run_dir/audit.json``; the summary's ``audit`` entry (``None``:
    not a cached folder)."""
    result = fast_audit(data)
    if result is None:
        return None
    (run_dir / "audit.json").write_text(json.dumps(result, indent=1) + "\n")
    return {"duplicate_groups": len(result["duplicates"]), "leaks": result["leaks"]}
