"""Registered augmentations that run on whole batches on the device (the in-memory path's way).

Each is a callable ``(images, targets) -> (images, targets)`` on float images in [0, 1],
applied before normalisation, per sample independently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from vitkit.registry import register_augmentation


def _shift(images: torch.Tensor, padding: int, fill: str) -> torch.Tensor:
    """Pad by ``padding`` and crop back at a random offset per sample (a random translation).

    One ``gather`` over flattened pixels: 2-2.5x faster on CPU than 4-D advanced indexing.
    """
    b, c, h, w = images.shape
    mode = "constant" if fill == "zero" else fill
    padded = F.pad(images, (padding,) * 4, mode=mode)
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=images.device)
    rows = torch.arange(h, device=images.device)[None, :, None] + dy
    cols = torch.arange(w, device=images.device)[None, None, :] + dx
    pixels = rearrange(rows * (w + 2 * padding) + cols, "b h w -> b 1 (h w)").expand(b, c, h * w)
    flat = rearrange(padded, "b c h w -> b c (h w)").gather(2, pixels)
    return rearrange(flat, "b c (h w) -> b c h w", h=h)


@register_augmentation("random_crop")
class RandomCrop:
    """Pad by ``padding`` pixels and crop a random image-sized window (CIFAR-style)."""

    def __init__(self, padding: int = 4, fill: str = "reflect") -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if fill not in ("zero", "reflect", "replicate"):
            raise ValueError(f"fill must be 'zero', 'reflect' or 'replicate', got {fill!r}")
        self.padding, self.fill = padding, fill

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.padding == 0:
            return images, targets
        return _shift(images, self.padding, self.fill), targets


@register_augmentation("translate")
class Translate(RandomCrop):
    """Shift each image by up to ``pixels`` in x and y, filling with zeros (digits-style)."""

    def __init__(self, pixels: int = 1, fill: str = "zero") -> None:
        super().__init__(padding=pixels, fill=fill)


@register_augmentation("hflip")
class HorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flip = torch.rand(images.shape[0], device=images.device) < self.p
        return torch.where(flip[:, None, None, None], images.flip(-1), images), targets
