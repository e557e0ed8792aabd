"""A pre-norm transformer block."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitkit.layers.drop import DropPath
from vitkit.layers.mlp import Mlp
from vitkit.registry import ATTENTION


class Block(nn.Module):
    """``x + DropPath(Attention(LN(x)))`` then ``x + DropPath(Mlp(LN(x)))``.

    ``attention`` is a registry name or ``{"name": ..., **kwargs}`` spec (see ``vitkit list attention``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attention: str | dict[str, Any] = "softmax",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ATTENTION.create(
            attention,
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
