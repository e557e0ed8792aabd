"""Position embeddings: fixed 2-D sine-cosine tables."""

from __future__ import annotations

import torch
from einops import rearrange


def sincos_2d(grid_size: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """A ``(grid_size**2, dim)`` table: sin/cos of row and column at geometric frequencies."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_size, dtype=torch.float32),
        torch.arange(grid_size, dtype=torch.float32),
        indexing="ij",
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4 - 1 or 1))
    rows = rearrange(rows, "h w -> (h w) 1") * omega
    cols = rearrange(cols, "h w -> (h w) 1") * omega
    return torch.cat([cols.sin(), cols.cos(), rows.sin(), rows.cos()], dim=1)
