"""A vitkit plugin: sigmoid-gated softmax attention, registered in vitkit's attention registry as ``gated``.

Importing this module registers the component; vitkit does so at start-up through the
``vitkit`` entry point declared in pyproject.toml. It has no other effect.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import vitkit

__all__ = ["GatedAttention"]


@vitkit.register_attention("gated")
class GatedAttention(nn.Module):
    """Softmax attention whose output is gated per head and channel by sigmoid(x W_g) (Qiu et al. 2025).

    The gate is computed from the block's input and applied to each head's output before the
    output projection; it lets a head switch itself off for a token and removes attention sinks.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.gate = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        gate = rearrange(torch.sigmoid(self.gate(x)), "b n (h d) -> b h n d", h=self.num_heads)
        return self.proj_drop(self.proj(rearrange(out * gate, "b h n d -> b n (h d)")))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` softmax weights (before the output gate)."""
        q, k, _ = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
