"""Registered datasets. Each returns train/val/test ``ImageSet``s plus what a model needs to know.

In-memory sets (digits, CIFAR, MNIST) hold one tensor of images; file-backed sets (imagefolder)
hold a ``torch.utils.data.Dataset`` read by a DataLoader with workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vitkit.data.multilabel import batch_targets, is_multi_label, label_ids, multi_hot
from vitkit.errors import UserError
from vitkit.registry import register_dataset

#: The ImageNet statistics RGB photos are normalised with (timm's ``IMAGENET_DEFAULT_MEAN``/``_STD``): the
#: datasets of files (imagefolder, webdataset, hf) and so the ``pretrained_cfg`` their runs export.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class ImageSet:
    """One split: ``images`` (N, C, H, W) uint8 or float in [0, 1] with ``labels`` (N,) (multi-label:
    multi-hot (N, classes)), or ``files``."""

    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    files: Dataset | None = None

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.labels)

    @property
    def multi_label(self) -> bool:
        """Several labels per image (multi-hot targets)."""
        if self.labels is not None:
            return self.labels.ndim == 2
        if hasattr(self.files, "multi_label"):  # streamed shards say so themselves
            return bool(self.files.multi_label)
        samples = getattr(self.files, "samples", None)
        return bool(samples) and is_multi_label(samples[0][1])

    @property
    def in_memory(self) -> bool:
        return self.files is None

    def targets(self) -> list[Any] | None:
        """Every image's class index (multi-label: tuple of them), in order (``None``: a file dataset
        that does not list its samples)."""
        if self.labels is not None and self.labels.ndim == 2:  # multi-hot
            return [tuple(row.nonzero().flatten().tolist()) for row in self.labels]
        if self.labels is not None:
            return self.labels.tolist()
        samples = getattr(self.files, "samples", None)
        return None if samples is None else [label for _, label in samples]

    def picture(self, index: int) -> Any:
        """Image ``index`` as a numpy ``(H, W)`` or ``(H, W, 3)`` array in [0, 1], for plotting."""
        image = self.images[index] if self.in_memory else self.files[index][0]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        image = image.clamp(0, 1).permute(1, 2, 0).numpy()
        return image[..., 0] if image.shape[-1] == 1 else image


@dataclass
class DataSplits:
    """The three splits and the facts about them that models, plots and predictions need."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    notes: list[str] = field(default_factory=list)
    bad_images: list[str] = field(default_factory=list)  # files skipped as unreadable (imagefolder)
    crop_pct: float = 0.0  # imagefolder: images are (S, S) bases, S = img_size / crop_pct, cropped on device
    split_record: dict | None = None  # imagefolder: what split.json holds

    @property
    def multi_label(self) -> bool:
        """Several labels per image: sigmoid loss, multi-hot targets, mAP and thresholds."""
        return self.train.multi_label

    def seen(self, show: int = 10) -> dict[str, Any]:
        """What a run read: data root and layout (imagefolder), the first ``show`` unreadable files skipped,
        and the images per class in each split."""
        record = self.split_record or {}
        counts: dict[str, dict[str, int]] = {}
        for name in ("train", "val", "test"):
            targets = getattr(self, name).targets()
            if targets is not None:
                counts[name] = {cls: 0 for cls in self.classes}
                for label in targets:
                    for i in label_ids(label):
                        counts[name][self.classes[i]] += 1
        return {
            "root": record.get("root"),
            "layout": record.get("layout"),
            "unreadable_files": self.bad_images[:show],
            "class_counts": counts,
        }


class ImageDataset:
    """Base of registered datasets: class attributes describe it without loading it."""

    classes: list[str] = []
    in_chans = 3
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __init__(
        self, img_size: int, val_fraction: float = 0.1, root: str = "data", download: bool = False, num_workers: int = 2
    ) -> None:
        self.img_size, self.val_fraction = img_size, val_fraction
        self.root, self.download, self.num_workers = Path(root), download, num_workers

    def load(self) -> DataSplits:
        raise NotImplementedError

    def _splits(self, train: ImageSet, val: ImageSet, test: ImageSet) -> DataSplits:
        return DataSplits(train, val, test, list(self.classes), self.in_chans, self.mean, self.std)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (rest, held_out) with ``fraction`` of every class held out; fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    rest, held = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_held = round(len(idx) * fraction)
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def in_memory_splits(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: tuple[torch.Tensor, torch.Tensor] | None,
    val_fraction: float,
    test_fraction: float = 0.2,
) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Fixed, seed-independent splits, so every run of a dataset is scored on the same images."""
    if test is None:
        rest, held = stratified_split(labels, test_fraction, seed=0)
        test = (images[held], labels[held])
        images, labels = images[rest], labels[rest]
    train_idx, val_idx = stratified_split(labels, val_fraction, seed=1)
    return (
        ImageSet(images[train_idx], labels[train_idx]),
        ImageSet(images[val_idx], labels[val_idx]),
        ImageSet(*test),
    )


class ImageFiles(Dataset):
    """(path, label) pairs decoded by ``vitkit.data.imageio.load_base`` to ``(C, S, S)`` uint8 base images.

    ``S`` is ``base_size`` (``floor(img_size / crop_pct)``): the short side resized to ``S``, aspect ratio
    kept, the square around the evaluation crop (side ``crop``, the model's input) kept; batches are
    cropped to the model's input on the device. An index may be
    ``(epoch, i)`` (``EpochSampler``): per-sample augmentations then draw from an RNG seeded by
    (seed, epoch, i), so a resumed run repeats them exactly, whichever worker decodes the image.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        base_size: int,
        in_chans: int,
        interpolation: str = "bilinear",
        crop: int | None = None,
    ) -> None:
        self.samples, self.base_size, self.in_chans = samples, base_size, in_chans
        self.interpolation, self.crop = interpolation, crop
        self.augment: list = []  # per-sample augmentations (objects with ``one(image)``), training split only
        self.num_classes = 0  # multi-label samples: their tuples become multi-hot rows of this length
        self.seed = 0

    def __len__(self) -> int:
        return len(self.samples)

    def base(self, source: Any) -> torch.Tensor:
        """The base image of one sample's source (here a file path)."""
        from vitkit.data.imageio import load_base

        return load_base(source, self.in_chans, self.base_size, self.interpolation, self.crop)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, Any]:
        epoch, index = index if isinstance(index, tuple) else (None, index)
        source, label = self.samples[index]
        if is_multi_label(label):
            label = multi_hot([label], self.num_classes)[0]
        image = self.base(source)
        if self.augment:
            with torch.random.fork_rng(devices=[]):
                if epoch is not None:
                    torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + index)
                for augment in self.augment:
                    image = augment.one(image)
        return image, label


@register_dataset("digits")
class Digits(ImageDataset):
    """scikit-learn's 1,797 handwritten digits, 8x8 grey (shipped, no download); fixed 20% test split."""

    classes = [str(i) for i in range(10)]
    in_chans = 1
    mean = (0.3,)
    std = (0.38,)

    def load(self) -> DataSplits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        labels = torch.tensor(digits.target, dtype=torch.long)
        return self._splits(*in_memory_splits(images, labels, None, self.val_fraction))


@register_dataset("imagefolder")
class ImageFolder(ImageDataset):
    """Your own images: ``root/<class>/``, ``root/train|val|test/<class>/``, or a ``path,label`` CSV
    (``labels``); missing splits carved stratified (see ``vitkit.data.folder``); decoded once into a cache."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        img_size: int,
        in_chans: int = 3,
        on_bad_image: str = "skip",
        labels: str = "",
        test_fraction: float = 0.1,
        split_seed: int = 0,
        split_file: str = "",
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        cache: str = "auto",
        cache_dir: str = "",
        cache_limit_gb: float = 4.0,
        cache_max_gb: float = 50.0,
        decode_device: str = "cpu",
        fold: str = "",
        exclude: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(img_size, **kwargs)
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
        if not 0.0 < crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.in_chans, self.on_bad_image = in_chans, on_bad_image
        self.labels, self.test_fraction, self.split_seed = labels, test_fraction, split_seed
        self.split_file, self.fold, self.exclude = split_file, fold, exclude
        self.crop_pct, self.interpolation = crop_pct, interpolation
        from vitkit.data.imageio import base_size

        self.base_size = base_size(img_size, crop_pct)
        self.cache, self.cache_limit_gb, self.cache_max_gb = cache, cache_limit_gb, cache_max_gb
        self.decode_device = torch.device(decode_device)  # cuda: the cache's first pass decodes JPEGs with nvjpeg
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / ".vitkit-cache"
        self.bad_images: list[str] = []
        if in_chans == 1:
            self.mean, self.std = (0.5,), (0.5,)
        from vitkit.data.folder import classes_of

        self.classes = classes_of(self.root, labels, split_file)

    def _drop_bad(self, found: dict[str, list[tuple[Path, int]]], bad: dict[Path, str], layout: str) -> set[Path]:
        """Warn about (or fail on) unreadable files; returns the set to drop."""
        from vitkit.data.imagecheck import warn_bad_images

        if not bad:
            return set()
        if self.on_bad_image == "error":
            name, in_split = next(
                (n, [f for f, _ in s if f in bad]) for n, s in found.items() if any(f in bad for f, _ in s)
            )
            path, reason = in_split[0], bad[in_split[0]]
            where = f" in {name}/" if layout == "split" else ""
            more = f" (and {len(in_split) - 1} more{where})" if len(in_split) > 1 else ""
            raise UserError(
                f"imagefolder: {path} is not a readable image ({reason}){more}; remove it, or set "
                f'data.on_bad_image = "skip"'
            )
        warn_bad_images(bad)
        self.bad_images += [str(path) for path in bad]
        return set(bad)

    def _fold_of(self, recorded: str) -> str:
        """The fold still to cut from a split file's splits (``recorded``: the fold the file already holds)."""
        if recorded and self.fold and recorded != self.fold:
            raise UserError(f"split file {self.split_file} holds fold {recorded} but data.fold = {self.fold!r}")
        return "" if recorded else self.fold  # a split.json written before folds were recorded: cut it now

    def load(self, only: tuple[str, ...] | None = None) -> DataSplits:
        """The three splits; ``only`` (with a split file): decode just these splits, stream the others."""
        from vitkit.data import folder
        from vitkit.data.cache import CachedImages, build_cache
        from vitkit.data.folds import fold_samples
        from vitkit.data.imagecheck import find_bad_images

        fixed = bool(self.split_file)  # a run's split.json: the splits are given, nothing is carved
        if fixed:
            self.classes, found, layout, recorded = folder.read_split(Path(self.split_file), self.root)
            if self._fold_of(recorded):
                found = fold_samples(found, self.fold)
        else:
            self.classes, found, layout = folder.scan(self.root, self.labels)
            if self.exclude:  # a run's split.json (above) already holds the plan's result
                plan_file = self.root / self.exclude
                found = folder.apply_exclusions(
                    found, self.classes, folder.read_exclusions(plan_file, self.root), plan_file
                )
        folder.check_classes({"train": found["train"]}, set(), self.classes, self.root, layout)  # before decoding
        decode = {name: samples for name, samples in found.items() if not (fixed and only) or name in only}
        files = sorted({path for samples in decode.values() for path, _ in samples})  # a file once, in one order
        cached = build_cache(
            files, self.in_chans, self.base_size, self.interpolation, self.cache, self.cache_dir,
            self.cache_limit_gb, self.num_workers, self.decode_device, self.cache_max_gb, self.img_size,
        )  # fmt: skip
        bad = cached[2] if cached is not None else find_bad_images(files, self.num_workers)
        dropped = self._drop_bad(decode, bad, layout)
        folder.check_classes(decode, dropped, self.classes, self.root, layout)
        found = {name: [s for s in samples if s[0] not in dropped] for name, samples in found.items()}
        if fixed:
            splits = found
        else:
            splits = folder.make_splits(found, self.classes, self.val_fraction, self.test_fraction, self.split_seed)
            if self.fold:
                splits = fold_samples(splits, self.fold)
        self.split_record = folder.split_record(splits, self.classes, self.root, layout, self.split_seed, self.fold)
        rows = {path: int(row) for path, row in zip(files, cached[1], strict=True)} if cached is not None else {}

        def split_set(samples: list[tuple[Path, int]]) -> ImageSet:
            if cached is not None and all(path in rows for path, _ in samples):
                labels = batch_targets(samples, len(self.classes))
                index = torch.tensor([rows[path] for path, _ in samples], dtype=torch.long)
                return ImageSet(CachedImages(cached[0], index), labels)  # type: ignore[arg-type]
            files = ImageFiles(samples, self.base_size, self.in_chans, self.interpolation, self.img_size)
            files.num_classes = len(self.classes)
            return ImageSet(files=files)

        out = self._splits(*(split_set(splits[name]) for name in folder.SPLITS))
        out.bad_images = list(self.bad_images)
        out.crop_pct, out.split_record = self.crop_pct, self.split_record
        if self.fold:
            out.notes.append(
                f"fold {self.fold}: {len(splits['val'])} val, {len(splits['train'])} train images (pooled)"
            )
        return out
