"""Streaming a split from shards under torchrun and DataLoader workers, with exact epochs.

The plan of an epoch is a function of (seed, epoch, rank, world size, worker, workers) and the shard
lengths in ``_info.json``, nothing else, so every rank knows every rank's share without talking:

- training: the shards in an order drawn from (seed, epoch) form one stream of ``N`` samples; rank
  ``r`` takes the contiguous stretch ``[r N / W, (r + 1) N / W)`` (it opens only the shards that
  overlap it), repeating its own first sample once when its stretch is one short, so every rank
  has ``ceil(N / W)`` samples; of those it trains on ``shares.train_used``, whole batches as every
  loader (the last partial batch is dropped: the repeat first, then samples drawn from (seed, epoch,
  rank), so each epoch drops others), and every rank runs the same number of steps; the ranks'
  samples are disjoint (WebDataset issues #434, #75: shard counts that do not divide evenly otherwise
  hang DDP or shorten epochs). The rank's batches are cut into contiguous blocks, one per worker; each
  worker shuffles through a buffer seeded by (seed, epoch, rank, worker);
- ``data.balance = "sampler"`` (``class_weights`` set): the stream is of ``N`` draws instead of the ``N``
  samples; each (shard, class) cell gets its number of draws from one multinomial over the cells
  (weight: the cell's images, ``class_counts`` of ``_info.json``, times its class's weight), seeded by
  (seed, epoch), and each draw of a cell picks one of its images uniformly (seeded by (seed, epoch,
  shard)): ``N`` draws with replacement by per-image weight, as the loaded paths draw. The ranks split
  the draws as they split samples, so counts and steps are unchanged; a shard's draws follow its samples
  in shard order, a sample repeated as often as it is drawn;
- evaluation: rank ``r`` takes the split positions ``r, r + W, ...`` (``loaders.eval_shard``) in shard
  order and worker ``k`` the batches ``k, k + K, ...`` of those, so the DataLoader's round-robin returns
  them in split order and every image is seen once (each worker reads every shard, decoding its own).

Images are decoded in the workers into the base images of ``vitkit.data.imageio.base_image`` (the
folder path's), per-sample augmentations seeded by (seed, epoch, position) as for folders.
"""

from __future__ import annotations

import io
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vitkit.data.shards import Shards, sample_image
from vitkit.data.shares import SAMPLE_LOG, train_positions, train_used


def worker_block(batches: int, worker: int, workers: int) -> range:
    """The contiguous batch indices of ``worker``."""
    return range(worker * batches // workers, (worker + 1) * batches // workers)


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    """The shards' order in a training epoch, from (seed, epoch) only."""
    order = list(range(num_shards))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order


class ShardStream(IterableDataset):
    """One split of shards as an iterable of ``(C, S, S)`` uint8 base images and labels, batched in the
    workers (``batch_size``); ``train`` picks the plan (see the module doc). ``len()`` is the split's size."""

    def __init__(
        self,
        shards: Shards,
        base_size: int,
        in_chans: int,
        interpolation: str = "bilinear",
        shuffle: int = 1000,
        name: str = "train",
        crop: int | None = None,
    ) -> None:
        self.name, self.shards, self.base_size, self.in_chans, self.interpolation = (
            name,
            shards,
            base_size,
            in_chans,
            interpolation,
        )
        self.shuffle, self.crop = shuffle, crop  # crop: the evaluation crop the bases are placed around
        self.train, self.batch_size, self.seed, self.epoch = False, 1, 0, 0
        self.rank, self.world_size = 0, 1
        self.augment: list = []  # per-sample augmentations (objects with ``one(image)``), training split only
        self.multi_label, self.num_classes = False, 0  # multi-label shards: ``.labels`` become multi-hot rows
        self._index: list[tuple[int, int]] | None = None  # random access: (shard, sample in shard) per position
        self.class_weights: list[float] | None = None  # data.balance = "sampler": each class's draw weight

    def __len__(self) -> int:
        return self.shards.num_samples

    # ------------------------------------------------------------------------------- the plan

    def rank_count(self) -> int:
        """Samples this rank yields per epoch."""
        n = self.shards.num_samples
        if self.train:  # whole batches only, as every training loader (``shares.train_batches``)
            return train_used(n, self.world_size, self.batch_size)
        return len(range(self.rank, n, self.world_size))

    def num_batches(self) -> int:
        return math.ceil(self.rank_count() / self.batch_size)

    def train_share(self) -> list[int]:
        """This rank's training positions of the epoch in stream order: its ``train_positions`` less what
        does not fill a whole batch (the repeat first, then positions drawn from (seed, epoch, rank))."""
        n = self.shards.num_samples
        mine = list(dict.fromkeys(train_positions(n, self.rank, self.world_size)))  # the repeat dropped
        used = train_used(n, self.world_size, self.batch_size)
        if used >= len(mine):
            return train_positions(n, self.rank, self.world_size)[:used]
        rng = random.Random(((self.seed * 1009 + self.epoch) * 1009 + self.rank) * 7919)
        return [mine[i] for i in sorted(rng.sample(range(len(mine)), used))]

    def _stream(self) -> list[int]:
        """Shard indices in stream order for this epoch."""
        count = len(self.shards.urls)
        return shard_order(count, self.seed, self.epoch) if self.train else list(range(count))

    def worker_positions(self, worker: int, workers: int) -> list[int]:
        """The stream positions ``worker`` of ``workers`` yields, in batch order before any shuffling."""
        n, b = self.shards.num_samples, self.batch_size
        if self.train:
            mine = self.train_share()
            block = worker_block(self.num_batches(), worker, workers)
            return mine[block.start * b : block.stop * b]
        mine = list(range(self.rank, n, self.world_size))
        return [p for j in range(worker, self.num_batches(), workers) for p in mine[j * b : (j + 1) * b]]

    def _samples(self, positions: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(split index, raw sample)`` for each wanted stream position (repeats included), reading only
        the shards that hold one, in stream order. The split index (shard order) names a sample in
        every epoch."""
        wanted: dict[int, int] = {}
        for p in positions:
            wanted[p] = wanted.get(p, 0) + 1
        lengths = self.shards.lengths
        first = [sum(lengths[:s]) for s in range(len(lengths))]  # split index of each shard's first sample
        draws = self._draws() if self.train else None  # weighted: draws per (shard, class)
        start = 0
        for shard in self._stream():
            size = lengths[shard] if draws is None else int(draws[shard].sum())
            if any(start <= p < start + size for p in wanted):
                times = self._times(shard, None if draws is None else draws[shard])
                at = start  # the stream position of this sample's first draw
                for offset, sample in enumerate(self.shards.read(self.shards.urls[shard])):
                    n = times(sample)
                    for _ in range(sum(wanted.get(q, 0) for q in range(at, at + n))):
                        yield first[shard] + offset, sample
                    at += n
            start += size

    def _draws(self) -> Any:
        """``data.balance = "sampler"``: the epoch's draws per (shard, class), an array (see the module doc);
        ``None``: unweighted."""
        if self.class_weights is None:
            return None
        import numpy as np

        counts = np.asarray(self.shards.class_counts, dtype=np.float64)
        cells = (counts * np.asarray(self.class_weights[: counts.shape[1]], dtype=np.float64)).ravel()
        rng = np.random.default_rng([self.seed % 2**63, self.epoch])
        return rng.multinomial(self.shards.num_samples, cells / cells.sum()).reshape(counts.shape)

    def _times(self, shard: int, draws: Any) -> Any:
        """``sample -> how often it is drawn``: once each, or (weighted) the ``draws`` of each class among
        the shard's images of that class, uniformly, in the order the shard holds them."""
        if draws is None:
            return lambda sample: 1
        import numpy as np

        rng = np.random.default_rng([self.seed % 2**63, self.epoch, shard])
        counts = self.shards.class_counts[shard]
        picks = [
            np.bincount(rng.integers(0, n, d), minlength=n) if n else [] for d, n in zip(draws, counts, strict=True)
        ]
        seen = [0] * len(counts)

        def times(sample: dict[str, Any]) -> int:
            label = int(sample["cls"])
            if label >= len(counts) or seen[label] >= counts[label]:
                from vitkit.errors import UserError

                raise UserError(
                    f"webdataset: shard {self.shards.urls[shard]} holds more images of class {label} than the "
                    "class_counts of its _info.json record; rewrite the shards with `vitkit shards`"
                )
            seen[label] += 1
            return int(picks[label][seen[label] - 1])

        return times

    # ---------------------------------------------------------------------------- iteration

    def decode(self, sample: dict[str, Any], index: int) -> tuple[torch.Tensor, Any]:
        """The base image (per-sample augmentations applied, seeded by epoch and split ``index``) and label."""
        from vitkit.data.imageio import base_image, open_image

        image = open_image(io.BytesIO(sample_image(sample)), "L" if self.in_chans == 1 else "RGB")
        image = base_image(image, self.in_chans, self.base_size, self.interpolation, self.crop)
        if self.augment:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
                for augment in self.augment:
                    image = augment.one(image)
        if self.multi_label:
            from vitkit.data.multilabel import multi_hot

            ids = tuple(int(i) for i in sample["labels"].decode().split(";") if i)
            return image, multi_hot([ids], self.num_classes)[0]
        return image, int(sample["cls"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        positions = self.worker_positions(worker, workers)
        samples = self._samples(positions)  # evaluation: in split order, as planned
        if self.train:  # the stretch read in stream order, shuffled through a buffer
            samples = _shuffled(
                samples, self.shuffle, ((self.seed * 1009 + self.epoch) * 1009 + self.rank) * 1009 + worker
            )
        log = _sample_log(self, worker)
        batch: list[tuple[torch.Tensor, int]] = []
        for index, sample in samples:
            batch.append(self.decode(sample, index))
            if log is not None:
                log.write(f"{index}\n")
            if len(batch) == self.batch_size:
                yield _collate(batch)
                batch = []
        if batch:
            yield _collate(batch)
        if log is not None:
            log.close()

    # -------------------------------------------------------------------------- random access

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Sample ``index`` of the split, in shard order (report image grids); reads its shard."""
        if self._index is None:
            self._index = [(s, i) for s, length in enumerate(self.shards.lengths) for i in range(length)]
        shard, offset = self._index[index]
        for i, sample in enumerate(self.shards.read(self.shards.urls[shard])):
            if i == offset:
                return self.decode(sample, index)
        raise IndexError(index)


def _shuffled(samples: Iterator[Any], size: int, seed: int) -> Iterator[Any]:
    """``samples`` through a shuffle buffer of ``size`` (0 or 1: in order), seeded by ``seed``."""
    if size <= 1:
        yield from samples
        return
    rng = random.Random(seed)
    buffer: list[Any] = []
    for sample in samples:
        buffer.append(sample)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def _collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*batch, strict=True)
    if isinstance(labels[0], torch.Tensor):  # multi-hot rows
        return torch.stack(images), torch.stack(labels)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def _sample_log(stream: ShardStream, worker: int) -> Any:
    folder = os.environ.get(SAMPLE_LOG)
    if not folder:
        return None
    name = f"{stream.name}-epoch{stream.epoch}-rank{stream.rank}-worker{worker}.txt"
    return open(Path(folder) / name, "a", buffering=1)  # noqa: SIM115 (line-buffered: a worker's generator may never finish)


class StreamLoader:
    """A DataLoader over a ``ShardStream`` (batched in its workers); batches moved to the device and
    transformed there, as ``FileLoader`` does for folders."""

    def __init__(
        self,
        data: Any,
        batch_size: int,
        transform: Any,
        device: torch.device,
        train: bool,
        num_workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        wait_s: float = 0.0,
    ) -> None:
        from torch.utils.data import DataLoader

        from vitkit.data.waits import loader_wait
        from vitkit.testing import stall_worker_hook

        self.stream: ShardStream = data.files
        if train:
            self.stream.augment = transform.take_sample_augments()
        self.stream.train, self.stream.batch_size, self.stream.seed = train, batch_size, seed
        self.stream.rank, self.stream.world_size = rank, world_size
        workers = min(num_workers, max(1, self.stream.num_batches()))
        self.generator = torch.Generator().manual_seed(seed)  # worker seeds: never a draw from the global RNG
        self.loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,  # a new epoch's plan reaches the workers with the dataset
            generator=self.generator,
            timeout=loader_wait(workers, wait_s),
            worker_init_fn=stall_worker_hook(rank) if train else None,
        )
        self.transform, self.device, self.train = transform, device, train
        self.wait_s = wait_s

    def class_counts(self, num_classes: int) -> torch.Tensor | None:
        """The split's images per class, from the shards' recorded ``class_counts`` (``None``: not recorded)."""
        rows = self.stream.shards.class_counts
        if rows is None or self.stream.multi_label:
            return None
        counts = torch.tensor(rows, dtype=torch.float64).sum(0).float()
        return torch.nn.functional.pad(counts, (0, max(0, num_classes - len(counts))))

    def set_class_weights(self, weights: torch.Tensor) -> None:
        """``data.balance = "sampler"``: the stream draws each image with its class's weight (module doc)."""
        self.stream.class_weights = weights.tolist()

    def set_epoch(self, epoch: int) -> None:
        """The epoch's shard order, shuffle and per-sample draws depend on (seed, epoch) only."""
        self.transform.set_epoch(epoch)
        self.stream.epoch = epoch
        self.generator.manual_seed(self.stream.seed * 100_003 + epoch)

    def __len__(self) -> int:
        return self.stream.num_batches()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from vitkit.data.waits import worker_batches

        stream = self.stream
        for images, labels in worker_batches(self.loader, self.wait_s, self.train, stream.rank, stream.world_size):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self.transform(images, labels, train=self.train)
