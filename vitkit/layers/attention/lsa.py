"""``lsa``: locality self-attention (Lee et al. 2021, "Vision Transformer for Small-Size Datasets")."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.layers.attention.heads import head_dim, merge_heads, split_qkv
from vitkit.registry import register_attention


@register_attention("lsa")
class LocalitySelfAttention(nn.Module):
    """Locality self-attention: a learnable softmax temperature and no token attending to itself.

    The scale starts at ``head_dim ** -0.5`` and is learned (log-parameterised); masking the
    diagonal sharpens attention toward other tokens, which helps ViTs on small datasets.
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
        self.num_heads = num_heads
        self.log_scale = nn.Parameter(torch.tensor(math.log(head_dim(dim, num_heads) ** -0.5)))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _scaled_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        n = x.shape[1]  # a single token has nothing else to attend to: leave it unmasked
        allowed = ~torch.eye(n, dtype=torch.bool, device=x.device) if n > 1 else None
        return q * self.log_scale.exp().to(q.dtype), k, v, allowed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, allowed = self._scaled_qkv(x)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=1.0)
        return self.proj_drop(self.proj(merge_heads(x)))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights (zero on the diagonal)."""
        q, k, _, allowed = self._scaled_qkv(x)
        logits = q @ k.transpose(-2, -1)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return logits.softmax(dim=-1)
