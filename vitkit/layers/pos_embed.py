"""Position encodings, registered by name (``model.pos_embed``): ``learn``, ``sincos``, ``none``, ``rope2d``.

A position encoding is a ``PosEmbed``: it may give the model an additive ``table`` for the
tokens (learned: an ``nn.Parameter``, kept at the model's ``pos_embed`` key as in timm; fixed:
a tensor) and/or a ``rotary`` module that every attention applies to its q and k. Importing
this module registers the built-ins; plugins add their own with ``vitkit.register_pos_embed``.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

from vitkit.registry import register_pos_embed


def sincos_2d(grid_size: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """A ``(grid_size**2, dim)`` table: sin/cos of row and column at geometric frequencies."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    rows, cols = _grid(grid_size)
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1 or 1))
    rows = rearrange(rows, "n -> n 1") * omega
    cols = rearrange(cols, "n -> n 1") * omega
    return torch.cat([cols.sin(), cols.cos(), rows.sin(), rows.cos()], dim=1)


def _grid(grid_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of each patch, row-major, as float ``(grid_size**2,)`` tensors."""
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float32), torch.arange(grid_size, dtype=torch.float32), indexing="ij"
    )
    return rearrange(rows, "h w -> (h w)"), rearrange(cols, "h w -> (h w)")


class PosEmbed:
    """A position encoding; the defaults add nothing. Subclass and override one or both:

    - ``table(grid_size, dim, num_prefix_tokens)``: an additive ``(1, prefix + patches, dim)``
      table for the token sequence (``num_prefix_tokens`` is 0 when it covers patches only), as
      an ``nn.Parameter`` (learned) or a tensor (fixed); ``None`` for none;
    - ``rotary(head_dim, grid_size, num_prefix_tokens)``: an ``nn.Module`` with
      ``forward(q, k) -> (q, k)`` on ``(B, heads, prefix + patches, head_dim)`` that every
      attention applies after its q/k norm; ``None`` for none.

    ``patches_only`` says the table never covers the prefix (class, register) tokens.
    Constructor keywords are the recipe's options: ``pos_embed = { name = "rope2d", theta = 10 }``.
    """

    patches_only = False

    def __init__(self, **kwargs: Any) -> None:
        pass

    def table(self, grid_size: int, dim: int, num_prefix_tokens: int) -> torch.Tensor | None:
        return None

    def rotary(self, head_dim: int, grid_size: int, num_prefix_tokens: int) -> nn.Module | None:
        return None


@register_pos_embed("learn")
class LearnedPosEmbed(PosEmbed):
    """Learned absolute positions, one vector per token (timm's ``pos_embed``)."""

    def table(self, grid_size: int, dim: int, num_prefix_tokens: int) -> torch.Tensor | None:
        return nn.Parameter(torch.zeros(1, grid_size**2 + num_prefix_tokens, dim))  # the model initialises it


@register_pos_embed("sincos")
class SinCosPosEmbed(PosEmbed):
    """Fixed 2-D sine-cosine positions on the patch tokens (MoCo v3, SimpleViT)."""

    patches_only = True

    def __init__(self, temperature: float = 10000.0, **kwargs: Any) -> None:
        self.temperature = temperature

    def table(self, grid_size: int, dim: int, num_prefix_tokens: int) -> torch.Tensor | None:
        return rearrange(sincos_2d(grid_size, dim, self.temperature), "n d -> 1 n d")


@register_pos_embed("none")
class NoPosEmbed(PosEmbed):
    """No position information."""


@register_pos_embed("rope2d")
class RoPE2dPosEmbed(PosEmbed):
    """2-D axial rotary positions on q and k (EVA-02; Heo et al. 2024, RoPE-Axial); prefix tokens not rotated."""

    def __init__(self, theta: float = 100.0, **kwargs: Any) -> None:
        if theta <= 1.0:
            raise ValueError(f"rope2d theta must be > 1, got {theta}")
        self.theta = theta

    def rotary(self, head_dim: int, grid_size: int, num_prefix_tokens: int) -> nn.Module | None:
        return Rope2d(head_dim, grid_size, num_prefix_tokens, self.theta)


class Rope2d(nn.Module):
    """Rotates q and k of the patch tokens by their column (first half of each head's channels)
    and row (second half) at geometric frequencies ``theta ** (-i / (head_dim / 4))``.

    q_i . k_j then depends on the positions only through their difference. Prefix tokens (class,
    registers) stay as they are. The angles are non-persistent buffers: no state-dict keys.
    """

    def __init__(self, head_dim: int, grid_size: int, num_prefix_tokens: int = 0, theta: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"rope2d needs a head dim (embed_dim / num_heads) divisible by 4, got {head_dim}")
        self.num_prefix_tokens = num_prefix_tokens
        quarter = head_dim // 4
        self.grid_size = grid_size
        self.register_buffer(
            "freqs", theta ** (-torch.arange(quarter, dtype=torch.float32) / quarter), persistent=False
        )
        angles = self.angles(grid_size)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        # which patches the tokens are, (B, K), after patch dropout; None: all, in order. The model
        # sets it at each forward (a checkpointed block's recompute reads the same value)
        self.kept: torch.Tensor | None = None
        # the patch grid of the images now (a model with dynamic_img_size sets it at each forward); None: grid_size
        self.grid: int | None = None

    def angles(self, grid_size: int) -> torch.Tensor:
        """``(grid_size**2, head_dim)`` rotation angles of a patch grid, matching ``rotate``'s channel pairs."""
        rows, cols = (axis.to(self.freqs.device) for axis in _grid(grid_size))
        x, y = rearrange(cols, "n -> n 1") * self.freqs, rearrange(rows, "n -> n 1") * self.freqs
        return torch.cat([x, x, y, y], dim=-1)

    def rotate(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, heads, prefix + patches, head_dim)`` with the patch tokens rotated."""
        prefix, patches = t[..., : self.num_prefix_tokens, :], t[..., self.num_prefix_tokens :, :]
        cos, sin = self.cos, self.sin
        if self.grid is not None and self.grid != self.grid_size:  # another image size: recomputed
            angles = self.angles(self.grid)
            cos, sin = angles.cos(), angles.sin()
        if self.kept is not None:  # each image's own kept positions
            cos, sin = (rearrange(table[self.kept], "b n d -> b 1 n d") for table in (cos, sin))
        if patches.shape[-2] != cos.shape[-2]:
            raise ValueError(f"rope2d was built for {cos.shape[-2]} patch tokens, got {patches.shape[-2]}")
        halves = rearrange(patches, "... (ax two c) -> ... ax two c", ax=2, two=2)
        turned = rearrange(torch.stack([-halves[..., 1, :], halves[..., 0, :]], dim=-2), "... a t c -> ... (a t c)")
        rotated = patches * cos.to(t.dtype) + turned * sin.to(t.dtype)
        return torch.cat([prefix, rotated], dim=-2)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rotate(q), self.rotate(k)
