"""Which training positions each torchrun rank takes in an epoch: one rule for every loader (in-memory,
file-backed and streamed shards), so a split is covered once per epoch with the same step count on every rank."""

from __future__ import annotations

SAMPLE_LOG = "VITKIT_TEST_SAMPLE_LOG"  # test hook: a folder where training loaders write the positions they yield


def rank_stretch(n: int, rank: int, world: int) -> range:
    """The contiguous positions of ``rank`` among ``n`` (sizes differ by at most one)."""
    return range(rank * n // world, (rank + 1) * n // world)


def train_count(n: int, world: int) -> int:
    """How many training positions every rank takes per epoch: ``ceil(n / world)``."""
    return -(-n // world)


def train_positions(n: int, rank: int, world: int) -> list[int]:
    """Rank ``rank``'s ``ceil(n / world)`` training positions: its stretch, its first one repeated if short
    (every position trained on once per epoch, disjoint across ranks, the same step count on every rank)."""
    stretch = list(rank_stretch(n, rank, world))
    need = train_count(n, world)
    return (stretch * need)[:need] if stretch else []
