"""Image -> sequence of patch tokens."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``patch_size`` patches and project each to ``embed_dim``.

    The projection is a strided convolution (one matmul per patch, as in timm), so weights
    move to and from timm unchanged. ``norm=True`` adds a LayerNorm on the projected tokens.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, norm: bool = False) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.strict_img_size = True
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_img_size(self, x)
        return self.norm(rearrange(self.proj(x), "b d gh gw -> b (gh gw) d"))


def check_img_size(embed: nn.Module, x: torch.Tensor) -> None:
    """A patch embedding's input check: ``embed.img_size`` square images, or (``strict_img_size`` off)
    square images of any multiple of ``embed.patch_size``."""
    size, patch = embed.img_size, embed.patch_size
    height, width = x.shape[-2:]
    if getattr(embed, "strict_img_size", True):
        if (height, width) != (size, size):
            raise ValueError(f"expected {size}x{size} images, got {(height, width)}")
    elif height != width or height % patch:
        raise ValueError(f"expected square images with a side divisible by {patch}, got {(height, width)}")
