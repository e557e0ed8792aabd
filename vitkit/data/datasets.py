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

from vitkit.errors import UserError
from vitkit.registry import register_dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


@dataclass
class ImageSet:
    """One split: ``images`` (N, C, H, W) uint8 or float in [0, 1] with ``labels`` (N,), or ``files``."""

    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    files: Dataset | None = None

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.files is None


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


def _in_memory_splits(
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
        return self._splits(*_in_memory_splits(images, labels, None, self.val_fraction))


class _TorchvisionDataset(ImageDataset):
    """A torchvision dataset held in memory as uint8; test split is the official one."""

    tv_name = ""
    files_hint = ""

    def load(self) -> DataSplits:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.tv_name)
        try:
            train = cls(str(self.root), train=True, download=self.download)
            test = cls(str(self.root), train=False, download=self.download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise UserError(
                f"{self.tv_name} not found under {self.root}/ ({err}); set data.download = true with "
                f"network access, or place {self.files_hint} there"
            ) from None
        except OSError as err:  # no network while downloading
            raise UserError(
                f"could not download {self.tv_name} to {self.root}/ ({err}); place {self.files_hint} there"
            ) from None

        def tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
            data = torch.as_tensor(ds.data)
            data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
            return data.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)

        return self._splits(*_in_memory_splits(*tensors(train), tensors(test), self.val_fraction))


@register_dataset("cifar10")
class Cifar10(_TorchvisionDataset):
    """CIFAR-10: 60,000 32x32 colour images of 10 classes (torchvision; ``download`` key)."""

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    tv_name, files_hint = "CIFAR10", "cifar-10-batches-py/ (from cifar-10-python.tar.gz)"


@register_dataset("cifar100")
class Cifar100(_TorchvisionDataset):
    """CIFAR-100: 60,000 32x32 colour images of 100 classes (torchvision; ``download`` key)."""

    classes = [f"class_{i}" for i in range(100)]
    mean, std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    tv_name, files_hint = "CIFAR100", "cifar-100-python/ (from cifar-100-python.tar.gz)"


@register_dataset("mnist")
class Mnist(_TorchvisionDataset):
    """MNIST: 70,000 28x28 grey handwritten digits (torchvision; ``download`` key)."""

    classes = [str(i) for i in range(10)]
    in_chans, mean, std = 1, (0.1307,), (0.3081,)
    tv_name, files_hint = "MNIST", "MNIST/raw/ (the four idx files)"


@register_dataset("fashion_mnist")
class FashionMnist(_TorchvisionDataset):
    """Fashion-MNIST: 70,000 28x28 grey clothing images (torchvision; ``download`` key)."""

    classes = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    in_chans, mean, std = 1, (0.2860,), (0.3530,)
    tv_name, files_hint = "FashionMNIST", "FashionMNIST/raw/ (the four idx files)"


class ImageFiles(Dataset):
    """(path, label) pairs read with PIL, converted to ``in_chans`` and resized to ``img_size``."""

    def __init__(self, samples: list[tuple[Path, int]], img_size: int, in_chans: int) -> None:
        from torchvision.transforms import v2

        self.samples = samples
        self.mode = "L" if in_chans == 1 else "RGB"
        self.augment: list = []  # per-sample augmentations (objects with ``one(image)``), training split only
        self.transform = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize((img_size, img_size), antialias=True),
            ]
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            image = self.transform(img.convert(self.mode))
        for augment in self.augment:
            image = augment.one(image)
        return image, label


@register_dataset("imagefolder")
class ImageFolder(ImageDataset):
    """Your own images: ``root/train/<class>/*.png`` and ``root/val/`` and/or ``root/test/``."""

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, img_size: int, in_chans: int = 3, on_bad_image: str = "skip", **kwargs: Any) -> None:
        super().__init__(img_size, **kwargs)
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f"on_bad_image must be 'skip' or 'error', got {on_bad_image!r}")
        self.in_chans, self.on_bad_image = in_chans, on_bad_image
        self.bad_images: list[str] = []
        if in_chans == 1:
            self.mean, self.std = (0.5,), (0.5,)
        train = self.root / "train"
        if not train.is_dir():
            raise UserError(f"imagefolder: no train/ folder under {self.root} (data.root)")
        self.classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        if not self.classes:
            raise UserError(f"imagefolder: {train} has no class folders")

    def _samples(self, split: Path) -> list[tuple[Path, int]]:
        names = sorted(p.name for p in split.iterdir() if p.is_dir())
        if names != self.classes:
            raise UserError(f"imagefolder: class folders of {split} differ from train/: {names} vs {self.classes}")
        samples = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (split / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise UserError(f"imagefolder: class folder {split / name} has no images")
            samples += [(f, label) for f in files]
        readable = set(self._readable([f for f, _ in samples], split))
        labels = {label for f, label in samples if f in readable}
        for label, name in enumerate(self.classes):
            if label not in labels:
                raise UserError(f"imagefolder: class folder {split / name} has no readable images")
        return [(f, label) for f, label in samples if f in readable]

    def _readable(self, files: list[Path], split: Path) -> list[Path]:
        """The files that decode; bad ones are warned about and skipped, or fail the run (on_bad_image)."""
        from vitkit.data.imagecheck import find_bad_images, warn_bad_images

        bad = find_bad_images(files, self.num_workers)
        if not bad:
            return files
        if self.on_bad_image == "error":
            path, reason = next(iter(bad.items()))
            more = f" (and {len(bad) - 1} more in {split.name}/)" if len(bad) > 1 else ""
            raise UserError(
                f"imagefolder: {path} is not a readable image ({reason}){more}; remove it, or set "
                f'data.on_bad_image = "skip"'
            )
        warn_bad_images(bad)
        self.bad_images += [str(path) for path in bad]
        return [f for f in files if f not in bad]

    def load(self) -> DataSplits:
        def split_set(samples: list[tuple[Path, int]]) -> ImageSet:
            return ImageSet(files=ImageFiles(samples, self.img_size, self.in_chans))

        train = self._samples(self.root / "train")
        val_dir, test_dir = self.root / "val", self.root / "test"
        if not val_dir.is_dir() and not test_dir.is_dir():
            labels = torch.tensor([label for _, label in train])
            rest, held = stratified_split(labels, self.val_fraction, seed=1)
            val = [train[i] for i in held]
            train = [train[i] for i in rest]
        else:
            val = self._samples(val_dir if val_dir.is_dir() else test_dir)
        test = self._samples(test_dir) if test_dir.is_dir() and val_dir.is_dir() else val
        splits = self._splits(split_set(train), split_set(val), split_set(test))
        splits.bad_images = list(self.bad_images)
        return splits
