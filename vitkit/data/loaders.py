"""Loaders: batches of (images, targets) on the device, augmented and normalised there."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from vitkit.data.datasets import ImageSet
from vitkit.data.shares import SAMPLE_LOG, train_batches, train_positions, train_used
from vitkit.data.waits import loader_wait, worker_batches

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def eval_shard(n: int, rank: int, world_size: int) -> range:
    """The split positions rank ``rank`` evaluates: ``rank, rank + world_size, ...``, with no padding
    (``DistributedSampler`` repeats images to even the shards; evaluation must see each image once)."""
    return range(rank, n, world_size)


class Balancing(Protocol):
    """What ``data.balance`` asks a training loader (``data.setup.apply_balance``); every loader
    ``build_loader`` returns answers it for its own data."""

    def class_counts(self, num_classes: int) -> torch.Tensor | None:
        """The training split's images per class (``None``: this loader cannot tell, so cannot balance)."""
        ...

    def set_class_weights(self, weights: torch.Tensor) -> None:
        """Draw each training image with its class's weight (``N`` draws with replacement per epoch)."""
        ...


class BatchTransform:
    """Raw batch -> model input: to float [0, 1], resize, augment (training only), normalise."""

    def __init__(
        self,
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augments: Sequence[Augment] = (),
        crop: Callable[[torch.Tensor], torch.Tensor] | str | None = None,
    ) -> None:
        """``crop`` (imagefolder base images, larger than ``img_size``): ``"center"`` for the centred
        crop, or a batched random crop (``BatchRandomResizedCrop``) for training; ``None``: resize."""
        self.img_size, self.crop = img_size, crop
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augments = list(augments)

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, train: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if callable(self.crop) and train:
            x = self.crop(x)
        elif self.crop is not None and min(x.shape[-2:]) >= self.img_size:
            from vitkit.data.imageio import center_crop

            x = center_crop(x, self.img_size)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=True
            )
        if train:
            for augment in self.augments:
                x, targets = augment(x, targets)
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std, targets

    def set_epoch(self, epoch: int) -> None:
        """Tell epoch-aware augmentations (mixup/cutmix ``off_epoch``) which epoch starts."""
        for augment in self.augments:
            if hasattr(augment, "set_epoch"):
                augment.set_epoch(epoch)

    def take_sample_augments(self) -> list[Augment]:
        """Remove and return the per-sample augmentations (file-backed data runs them in the workers)."""
        taken = [a for a in self.augments if getattr(a, "per_sample", False)]
        self.augments = [a for a in self.augments if not getattr(a, "per_sample", False)]
        return taken


def epoch_order(n: int, seed: int, epoch: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The training order of an epoch, a function of (seed, epoch) only: a permutation, or ``n`` draws
    with replacement by ``weights`` (class-balanced sampling)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights.double(), n, replacement=True, generator=g)
    return torch.randperm(n, generator=g)


def train_share(order: torch.Tensor, rank: int, world_size: int, batch_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of an epoch's training ``order``: ``train_positions`` of it, cut to the
    ``train_used`` that fill whole batches (the order is random, so what is dropped changes every epoch;
    a padded share drops its repeat first). Shards stream by the same positions (``data.stream``)."""
    share = order[train_positions(len(order), rank, world_size)]
    return share[: train_used(len(order), world_size, batch_size)]


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` for a file-backed dataset: training order from ``epoch_order`` (this rank's
    ``train_share`` of it, whole batches of ``batch_size``), evaluation order sequential
    (``rank::world_size``); the dataset seeds per-sample augmentations from (seed, epoch, index), so
    persistent workers give the same draws after a resume."""

    def __init__(
        self, n: int, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1, batch_size: int = 1
    ) -> None:
        self.n, self.train, self.seed, self.rank, self.world_size = n, train, seed, rank, world_size
        self.batch_size = batch_size
        self.epoch = 0
        self.weights: torch.Tensor | None = None

    def indices(self) -> list[int]:
        if not self.train:
            return list(eval_shard(self.n, self.rank, self.world_size))
        order = epoch_order(self.n, self.seed, self.epoch, self.weights)
        return train_share(order, self.rank, self.world_size, self.batch_size).tolist()

    def __len__(self) -> int:
        return len(self.indices()) if not self.train else train_used(self.n, self.world_size, self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self.indices()
        if self.train and os.environ.get(SAMPLE_LOG):
            name = f"train-epoch{self.epoch}-rank{self.rank}.txt"
            (Path(os.environ[SAMPLE_LOG]) / name).write_text("".join(f"{i}\n" for i in indices))
        return iter([(self.epoch, i) for i in indices])


class InMemoryLoader:
    """The whole split as one tensor on the device; batches by shuffled index, no workers."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        transform: BatchTransform,
        device: torch.device,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size, self.transform, self.train = batch_size, transform, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.sample_weights: torch.Tensor | None = None  # data.balance = "sampler": draw by these weights

    def class_counts(self, num_classes: int) -> torch.Tensor | None:
        return None if self.labels.ndim != 1 else torch.bincount(self.labels.cpu(), minlength=num_classes).float()

    def set_class_weights(self, weights: torch.Tensor) -> None:
        self.sample_weights = weights.cpu()[self.labels.cpu()]

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle deterministically for ``epoch`` (so a resumed run sees the same batches)."""
        self.epoch = epoch
        self.transform.set_epoch(epoch)

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.tensor(eval_shard(n, self.rank, self.world_size), dtype=torch.long)
        order = epoch_order(n, self.seed, self.epoch, self.sample_weights)
        return train_share(order, self.rank, self.world_size, self.batch_size)

    def __len__(self) -> int:
        if self.train:
            return train_batches(len(self.labels), self.world_size, self.batch_size)
        return -(-len(eval_shard(len(self.labels), self.rank, self.world_size)) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices().to(self.images.device)
        for start in range(0, len(indices), self.batch_size):
            idx = indices[start : start + self.batch_size]
            yield self.transform(self.images[idx], self.labels[idx], train=self.train)


class FileLoader:
    """A DataLoader with workers over files; batches moved to the device, then transformed there."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        transform: BatchTransform,
        device: torch.device,
        train: bool,
        num_workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        wait_s: float = 0.0,
    ) -> None:
        from torch.utils.data import DataLoader

        from vitkit.testing import stall_worker_hook

        if train:  # per-sample augmentations (RandAugment, ...) run in the workers, on CPU
            data.files.augment = transform.take_sample_augments()
        data.files.seed = seed
        self.sampler = EpochSampler(len(data), train, seed, rank, world_size, batch_size)
        self.loader = DataLoader(
            data.files,
            batch_size=batch_size,
            sampler=self.sampler,  # training: whole batches only (``shares.train_batches``)
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),  # worker seeds: never a draw from the global RNG
            timeout=loader_wait(num_workers, wait_s),
            worker_init_fn=stall_worker_hook(rank) if train else None,
        )
        self.transform, self.device, self.train, self.seed, self.rank = transform, device, train, seed, rank
        self.files = data.files
        self.wait_s, self.world_size = wait_s, world_size

    def _labels(self) -> torch.Tensor | None:
        """Each image's class index, from the dataset's ``samples`` (``None``: it lists none, or multi-label)."""
        from vitkit.data.multilabel import is_multi_label

        samples = getattr(self.files, "samples", None)
        if samples is None or (samples and is_multi_label(samples[0][1])):
            return None
        return torch.tensor([int(label) for _, label in samples], dtype=torch.long)

    def class_counts(self, num_classes: int) -> torch.Tensor | None:
        labels = self._labels()
        return None if labels is None else torch.bincount(labels, minlength=num_classes).float()

    def set_class_weights(self, weights: torch.Tensor) -> None:
        self.sampler.weights = weights.cpu()[self._labels()]

    def set_epoch(self, epoch: int) -> None:
        """The epoch's order and per-sample draws depend on (seed, epoch) only (exact on resume)."""
        self.transform.set_epoch(epoch)
        self.sampler.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in worker_batches(self.loader, self.wait_s, self.train, self.rank, self.world_size):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            yield self.transform(images, labels, train=self.train)


def build_loader(
    data: ImageSet,
    batch_size: int,
    transform: BatchTransform,
    device: torch.device,
    train: bool,
    num_workers: int = 2,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    wait_s: float = 0.0,
) -> Any:
    """The in-memory loader for tensor splits, a DataLoader for file-backed ones (streamed for shards);
    ``wait_s``: how long a batch from the workers may take (``train.wait_timeout``; 0: no limit)."""
    if data.in_memory:
        return InMemoryLoader(data, batch_size, transform, device, train, seed, rank, world_size)
    if isinstance(data.files, torch.utils.data.IterableDataset):
        from vitkit.data.stream import StreamLoader

        return StreamLoader(data, batch_size, transform, device, train, num_workers, seed, rank, world_size, wait_s)
    return FileLoader(data, batch_size, transform, device, train, num_workers, seed, rank, world_size, wait_s)


def eval_transform(data: Mapping[str, Any]) -> BatchTransform:
    """The evaluation transform of a run's data metadata (``img_size``, ``mean``, ``std``, ``crop_pct``):
    uint8 bases or views are centre-cropped (imagefolder runs); other images are resized to ``img_size``."""
    return BatchTransform(data["img_size"], data["mean"], data["std"], crop="center" if data.get("crop_pct") else None)
