"""Exact and near copies of images, grouped, and the leaks among them (a group spanning train and val/test).

- exact: the same decoded pixels (``pixel_digest``: a PNG re-save of a JPEG is an exact copy), or in a
  run, the same stored base image (``base_digests``);
- near: a 64-bit DCT perceptual hash (pHash) of the base image whose Hamming distance to another's is at
  most ``NEAR_THRESHOLD`` bits, confirmed by the correlation of their 16x16 colour thumbnails (at least
  ``NEAR_CORRELATION``): resized, re-compressed or slightly cropped copies, and burst shots. The hash
  alone also joins unrelated pictures of the same plain layout (a sky over a field); the check removes them.

Copies are joined with union-find, so a group holds every image linked to another by either test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitkit.data.multilabel import label_names

if TYPE_CHECKING:
    import torch

NEAR_THRESHOLD = 14  # pHash bits (of 64) two images may differ by and still count as near copies (if correlated)
NEAR_CORRELATION = 0.95  # least correlation (centred, cosine) of two near copies' 16x16 colour thumbnails
THUMB_SIDE = 16
HASH_SIDE = 32  # the grey thumbnail the DCT is taken of; its 8x8 lowest frequencies make the hash
HELD_OUT = ("val", "test")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class Item:
    """One image of the audited data: its file, its path relative to the root, its split and class index
    (a tuple of them for a multi-label image)."""

    path: Path
    rel: str
    split: str
    label: int | tuple[int, ...]


def pixel_digest(img: Any) -> str:
    """A hash of a decoded PIL image's pixels (mode, size and bytes): equal for a lossless re-save."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode} {img.size}".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def base_digests(images: torch.Tensor) -> list[str]:
    """A hash of each ``(C, S, S)`` uint8 base image of a batch."""
    return [hashlib.blake2b(image.numpy().tobytes(), digest_size=16).hexdigest() for image in images.cpu()]


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` is the DCT of the columns of ``x``."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    d[0] /= np.sqrt(2)
    return d


_DCT = _dct_matrix(HASH_SIDE)


@dataclass
class Signatures:
    """What near copies are found by: ``hashes`` (N,) uint64 pHashes, ``thumbs`` (N, D) unit vectors."""

    hashes: np.ndarray
    thumbs: np.ndarray

    @staticmethod
    def join(parts: Sequence[Signatures]) -> Signatures:
        if not parts:
            return Signatures(np.zeros(0, dtype=np.uint64), np.zeros((0, 1), dtype=np.float32))
        return Signatures(np.concatenate([p.hashes for p in parts]), np.concatenate([p.thumbs for p in parts]))


def signatures(images: torch.Tensor) -> Signatures:
    """The pHash and thumbnail of each ``(C, S, S)`` image of a batch. pHash: grey, shrunk to 32x32, its
    8x8 lowest DCT frequencies compared with their median (the constant term left out), 64 bits.
    Thumbnail: 16x16 colour, centred and scaled to unit length."""
    import torch.nn.functional as F  # noqa: N812

    pixels = images.float()
    grey = pixels.mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(HASH_SIDE, HASH_SIDE), mode="bilinear", antialias=True)[:, 0].numpy()
    low = (_DCT @ small @ _DCT.T)[:, :8, :8].reshape(len(small), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    hashes = np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)
    thumbs = F.interpolate(pixels, size=(THUMB_SIDE, THUMB_SIDE), mode="bilinear", antialias=True).flatten(1)
    thumbs = thumbs - thumbs.mean(dim=1, keepdim=True)
    thumbs = thumbs / thumbs.norm(dim=1, keepdim=True).clamp_min(1e-6)
    return Signatures(hashes, thumbs.numpy().astype(np.float32))


def near_pairs(
    sig: Signatures, threshold: int = NEAR_THRESHOLD, min_correlation: float = NEAR_CORRELATION
) -> list[tuple[int, int, int]]:
    """``(i, j, distance)`` for every pair ``i < j`` whose hashes differ by at most ``threshold`` bits and
    whose thumbnails correlate at least ``min_correlation`` (all pairs compared, in row blocks: fine up
    to some 50,000 images); ``threshold < 0``: none."""
    hashes = sig.hashes
    n = len(hashes) if threshold >= 0 else 0
    pairs: list[tuple[int, int, int]] = []
    block = max(1, 2**22 // max(n, 1))
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        xor = (rows[:, None] ^ hashes[None, :]).view(np.uint8).reshape(len(rows), n, 8)
        dist = _POPCOUNT[xor].sum(axis=2, dtype=np.int32)
        for r, j in zip(*np.nonzero(dist <= threshold), strict=True):
            i, j = start + int(r), int(j)
            if j > i and float(sig.thumbs[i] @ sig.thumbs[j]) >= min_correlation:
                pairs.append((i, j, int(dist[r, j])))
    return pairs


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)


def is_leak(splits: Iterable[str]) -> bool:
    """Whether a group's splits span train and val or test."""
    found = set(splits)
    return "train" in found and bool(found & set(HELD_OUT))


def duplicate_groups(
    items: Sequence[Item],
    classes: Sequence[str],
    digests: Sequence[str],
    sig: Signatures,
    threshold: int = NEAR_THRESHOLD,
) -> list[dict[str, Any]]:
    """Groups of two or more copies, leaks first, then the largest: ``paths``, ``splits``, ``labels`` (class
    names), ``kind`` (``exact``: one digest for all; else ``near``), ``leak`` and ``max_distance`` (pHash bits)."""
    uf = _UnionFind(len(items))
    first: dict[str, int] = {}
    for i, digest in enumerate(digests):
        uf.join(i, first.setdefault(digest, i))
    distance: dict[int, int] = {}
    for i, j, d in near_pairs(sig, threshold):
        uf.join(i, j)
        distance[i], distance[j] = max(distance.get(i, 0), d), max(distance.get(j, 0), d)
    members: dict[int, list[int]] = {}
    for i in range(len(items)):
        members.setdefault(uf.find(i), []).append(i)
    groups = []
    for group in members.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda i: (items[i].split != "train", items[i].rel))  # a train copy first: the one kept
        exact = len({digests[i] for i in group}) == 1
        groups.append(
            {
                "paths": [items[i].rel for i in group],
                "splits": [items[i].split for i in group],
                "labels": [label_names(items[i].label, classes) for i in group],
                "kind": "exact" if exact else "near",
                "leak": is_leak(items[i].split for i in group),
                "max_distance": 0 if exact else max(distance.get(i, 0) for i in group),
            }
        )
    groups.sort(key=lambda g: (not g["leak"], -len(g["paths"]), g["paths"][0]))
    return groups


def leaked_images(groups: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Per held-out split, how many of its images have a copy in train."""
    counts = dict.fromkeys(HELD_OUT, 0)
    for group in groups:
        if group["leak"]:
            for split in group["splits"]:
                if split in counts:
                    counts[split] += 1
    return counts


def leak_note(summary: dict[str, Any]) -> str:
    """``LEAK: ...`` when the run's audit found test or val images with a copy in train, else ``""``."""
    leaks = (summary.get("audit") or {}).get("leaks") or {}
    if not leaks.get("groups"):
        return ""
    return (
        f"LEAK: {leaks['test']} test and {leaks['val']} val image{'s' * (leaks['test'] + leaks['val'] != 1)} "
        "have a copy in train (audit.json); this accuracy flatters"
    )
