"""Attention variants, registered by name. Each maps ``(B, N, dim) -> (B, N, dim)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

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
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # QK-norm (Dehghani et al. 2023): LayerNorm on each head's queries and keys (timm's q_norm/k_norm)
        self.q_norm = nn.LayerNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // num_heads, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(rearrange(x, "b h n d -> b n (h d)")))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights, computed explicitly (for visualisation)."""
        q, k, _ = rearrange(self.qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
