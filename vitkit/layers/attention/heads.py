"""Head bookkeeping shared by the attention variants: sizes, and splitting/merging heads with einops."""

from __future__ import annotations

import torch
from einops import rearrange


def head_dim(dim: int, num_heads: int) -> int:
    """``dim // num_heads``; a ``ValueError`` naming both when they do not divide."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
    return dim // num_heads


def split_qkv(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fused ``(B, N, 3*dim)`` projection -> q, k, v of shape ``(B, heads, N, head_dim)``."""
    q, k, v = rearrange(qkv, "b n (qkv h d) -> qkv b h n d", qkv=3, h=num_heads)
    return q, k, v


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, head_dim)`` -> ``(B, N, dim)``."""
    return rearrange(x, "b h n d -> b n (h d)")
