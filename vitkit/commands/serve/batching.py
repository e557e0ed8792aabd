"""Dynamic batching for ``vitkit serve``: images from concurrent requests join one queue; one task takes up
to ``max_batch`` of them, waiting at most ``max_wait`` seconds after the first, and runs them as one batch
in the model's thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0


class Batcher:
    """Dynamic batching: ``submit`` queues one item; one task runs ``run_batch`` on up to ``max_batch``
    queued items in ``executor``, waiting at most ``max_wait_s`` after the first for more."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        executor: ThreadPoolExecutor,
        max_batch: int,
        max_wait_s: float,
    ) -> None:
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any]]] = asyncio.Queue()
        self.stats = BatchStats()

    async def submit(self, item: Any) -> Any:
        """The result of ``run_batch`` for ``item``, once its batch has run."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():  # already waiting: no need to wait for them
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
                break
        return batch

    async def run(self) -> None:
        """Batch forever (until cancelled); a failing batch fails its requests only."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [(item, future) for item, future in await self._collect() if not future.done()]
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [item for item, _ in batch])
            except Exception as err:  # a bug in the model call: those requests get a 500, the server goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            self.stats.batches += 1
            self.stats.images += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # the client may have gone
                    future.set_result(result)
