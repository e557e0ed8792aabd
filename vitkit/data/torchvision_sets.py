"""The torchvision datasets vitkit registers (CIFAR-10/100, MNIST, Fashion-MNIST), held in memory as
uint8 with their official test split; ``data.download`` fetches them."""

from __future__ import annotations

from typing import Any

import torch

from vitkit.data.datasets import DataSplits, ImageDataset, in_memory_splits
from vitkit.errors import UserError
from vitkit.registry import register_dataset


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

        return self._splits(*in_memory_splits(*tensors(train), tensors(test), self.val_fraction))


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
