"""Registered per-sample augmentations, each a torchvision ``transforms.v2`` transform.

Where they run:

- file-backed datasets (``imagefolder``): in the DataLoader workers, on CPU, on each uint8
  image after it is resized (before the batched augmentations, whatever the listed order);
- in-memory datasets (digits, CIFAR, MNIST): on the device, one image at a time in a Python
  loop over the batch (v2 transforms draw one set of random parameters per call, so a batched
  call would give every image the same operation). Correct, but slower than the batched ones:
  prefer ``random_crop``/``hflip``/``translate``/mixup/cutmix there when speed matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vitkit.registry import register_augmentation


class SampleAugment:
    """A v2 transform applied to each image separately; ``one`` is the single-image path (workers)."""

    per_sample = True

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def one(self, image: torch.Tensor) -> torch.Tensor:
        """One ``(C, H, W)`` image, uint8 or float in [0, 1] -> the same kind, augmented."""
        return self.transform(image)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([self.transform(image) for image in images]), targets

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform})"


def _v2() -> Any:
    from torchvision.transforms import v2

    return v2


@register_augmentation("random_resized_crop")
class RandomResizedCrop(SampleAugment):
    """Crop a random area (``scale``) and aspect (``ratio``) of each image, resize back (Inception-style)."""

    def __init__(
        self, img_size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3)
    ) -> None:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {list(scale)}")
        super().__init__(_v2().RandomResizedCrop(img_size, scale=tuple(scale), ratio=tuple(ratio), antialias=True))


@register_augmentation("randaugment")
class RandAugment(SampleAugment):
    """RandAugment (Cubuk et al. 2020): ``num_ops`` random operations of strength ``magnitude`` (0-30)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        if not 0 <= magnitude < num_magnitude_bins:
            raise ValueError(f"magnitude must be in [0, {num_magnitude_bins - 1}], got {magnitude}")
        super().__init__(_v2().RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins))


@register_augmentation("trivialaugment")
class TrivialAugment(SampleAugment):
    """TrivialAugment Wide (Mueller & Hutter 2021): one random operation at a random strength."""

    def __init__(self, num_magnitude_bins: int = 31) -> None:
        super().__init__(_v2().TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins))


@register_augmentation("autoaugment")
class AutoAugment(SampleAugment):
    """AutoAugment (Cubuk et al. 2019) with a learned ``policy``: cifar10, imagenet or svhn."""

    def __init__(self, policy: str = "cifar10") -> None:
        v2 = _v2()
        policies = {p.value: p for p in v2.AutoAugmentPolicy}
        if policy not in policies:
            raise ValueError(f"policy must be one of {', '.join(policies)}, got {policy!r}")
        super().__init__(v2.AutoAugment(policies[policy]))


@register_augmentation("color_jitter")
class ColorJitter(SampleAugment):
    """Random brightness, contrast, saturation and hue, each image its own draw."""

    def __init__(
        self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0
    ) -> None:
        super().__init__(_v2().ColorJitter(brightness, contrast, saturation, hue))


@register_augmentation("random_erasing")
class RandomErasing(SampleAugment):
    """Erase a random rectangle with probability ``p`` (Zhong et al. 2020); ``value`` 0 (black) or "random"."""

    def __init__(
        self,
        p: float = 0.25,
        scale: Sequence[float] = (0.02, 1 / 3),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float | str = 0.0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if isinstance(value, str) and value != "random":
            raise ValueError(f"value must be a number or 'random', got {value!r}")
        super().__init__(_v2().RandomErasing(p=p, scale=tuple(scale), ratio=tuple(ratio), value=value))

    def one(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype == torch.uint8 and self.transform.value == "random":  # noise needs a float image
            return (self.transform(image.float() / 255).clamp(0, 1) * 255).round().to(torch.uint8)
        return self.transform(image)
