"""``cosine``: scaled cosine attention with a learnable per-head temperature (Swin Transformer V2)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitkit.layers.attention.heads import head_dim, merge_heads, split_qkv
from vitkit.registry import register_attention


@register_attention("cosine")
class CosineAttention(nn.Module):
    """Scaled cosine attention (Swin-V2): softmax(cos(q, k) * s_h) v, with a learnable per-head scale s_h.

    ``s_h = exp(logit_scale_h)``, started at ``init_scale`` (10) and capped at ``max_scale`` (100).
    Cosine similarity keeps logits bounded, which stabilises large or long-trained models.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        init_scale: float = 10.0,
        max_scale: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        head_dim(dim, num_heads)
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"need 0 < init_scale <= max_scale, got {init_scale} and {max_scale}")
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(init_scale)))  # 1-D: no weight decay
        self.max_log_scale = math.log(max_scale)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _unit_qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        scale = rearrange(self.logit_scale.clamp(max=self.max_log_scale).exp(), "h -> h 1 1")
        return F.normalize(q, dim=-1) * scale.to(q.dtype), F.normalize(k, dim=-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._unit_qk(x)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=1.0)
        return self.proj_drop(self.proj(merge_heads(x)))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights."""
        q, k, _ = self._unit_qk(x)
        return (q @ k.transpose(-2, -1)).softmax(dim=-1)
