"""Which training positions each torchrun rank takes in an epoch, and how many steps that makes: one rule for
every loader (in-memory, file-backed and streamed shards), so a split is covered the same way with the same
step count on every rank, and the same data gives the same steps per epoch (and LR schedule) through any
loader."""

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
    (disjoint across ranks, the same count on every rank)."""
    stretch = list(rank_stretch(n, rank, world))
    need = train_count(n, world)
    return (stretch * need)[:need] if stretch else []


def train_batches(n: int, world: int, batch_size: int) -> int:
    """Training steps every rank runs per epoch: the full batches of its ``train_count`` positions. The last
    partial batch is dropped, as timm does (every step the same size: one compiled graph, no small noisy
    step), unless a rank's share is smaller than one batch, which is then its one step. None when some rank
    would have no image (fewer images than ranks)."""
    if n < world:
        return 0
    count = train_count(n, world)
    return count // batch_size if count >= batch_size else 1


def train_used(n: int, world: int, batch_size: int) -> int:
    """How many of its ``train_count`` positions a rank trains on per epoch (``train_batches`` of them)."""
    return min(train_count(n, world), train_batches(n, world, batch_size) * batch_size)
