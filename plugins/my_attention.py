"""A single-file vitkit plugin: ReLU attention, registered as ``relu``.

Name this file in a recipe (paths are relative to the recipe file) and use the attention:

    plugins = ["../plugins/my_attention.py"]
    [model]
    attention = "relu"

or pass it on the command line: ``vitkit run recipes/digits.toml --plugin plugins/my_attention.py
--set model.attention=relu``. See recipes/digits_custom_attention.toml and docs/plugins.md.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

import vitkit


@vitkit.register_attention("relu")
class ReluAttention(nn.Module):
    """ReLU attention: relu(q k^T / sqrt(d)) / N in place of softmax (Wortsman et al. 2023)."""

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
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        return q, k, v

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.relu(q @ k.transpose(-2, -1) * self.scale) / k.shape[2]  # divided by N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = self.attn_drop(self._weights(q, k)) @ v
        return self.proj_drop(self.proj(rearrange(out, "b h n d -> b n (h d)")))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights."""
        q, k, _ = self._qkv(x)
        return self._weights(q, k)
