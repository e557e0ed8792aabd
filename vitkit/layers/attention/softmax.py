"""``softmax``: standard multi-head attention through PyTorch's fused SDPA kernels."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.layers.attention.heads import head_dim, merge_heads, split_qkv
from vitkit.registry import register_attention


@register_attention("softmax")
class SoftmaxAttention(nn.Module):
    """Multi-head scaled dot-product softmax attention (fused SDPA kernels); ``qk_norm`` optional."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qk_norm: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = head_dim(dim, num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # QK-norm (Dehghani et al. 2023): LayerNorm on each head's queries and keys (timm's q_norm/k_norm)
        self.q_norm = nn.LayerNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(x)))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights, computed explicitly (for visualisation)."""
        q, k, _ = split_qkv(self.qkv(x), self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
