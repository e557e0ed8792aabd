"""Bounded waits for DataLoader workers (``train.wait_timeout``): the DataLoader timeout to set, and the
one line a batch that never came turns into."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def worker_batches(loader: Any, wait_s: float, train: bool, rank: int, world_size: int) -> Iterator[Any]:
    """The batches of a DataLoader whose ``timeout`` is ``wait_s``: a batch its workers did not deliver in
    time is one line naming the rank and the wait (``WaitTimedOut``), not a hang or a traceback."""
    try:
        yield from loader
    except RuntimeError as err:
        if not str(err).startswith("DataLoader timed out"):
            raise
        from vitkit.errors import WaitTimedOut

        who = f"rank {rank}: " if world_size > 1 else ""
        raise WaitTimedOut(
            f"{who}waited {wait_s:g} s for {'a training' if train else 'an evaluation'} batch from its "
            f"{loader.num_workers} DataLoader workers (train.wait_timeout): a worker is stuck or reads that slowly; "
            f"set data.num_workers = 0 to see where it stops, or raise train.wait_timeout"
        ) from None


def loader_wait(num_workers: int, wait_s: float) -> float:
    """The DataLoader ``timeout`` for ``wait_s`` (0: none; it applies to worker processes only)."""
    return wait_s if num_workers > 0 else 0.0
