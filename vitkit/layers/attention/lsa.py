"""``lsa``: locality self-attention (Lee et al. 2021, "Vision Transformer for Small-Size Datasets")."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.layers.attention.base import Attention
from vitkit.registry import register_attention


@register_attention("lsa")
class LocalitySelfAttention(Attention):
    """Locality self-attention: a learnable softmax temperature and no token attending to itself.

    The scale starts at ``head_dim ** -0.5`` and is learned (log-parameterised); masking the
    diagonal sharpens attention toward other tokens, which helps ViTs on small datasets.
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.log_scale = nn.Parameter(torch.tensor(math.log(self.scale)))

    def _scaled(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q times the learned scale, and the mask of allowed pairs (``None`` for a lone token)."""
        n = q.shape[2]  # a single token has nothing else to attend to: leave it unmasked
        allowed = ~torch.eye(n, dtype=torch.bool, device=q.device) if n > 1 else None
        return q * self.log_scale.exp().to(q.dtype), allowed

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Softmax weights, zero on the diagonal."""
        q, allowed = self._scaled(q)
        logits = q @ k.transpose(-2, -1)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        return logits.softmax(dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, allowed = self._scaled(q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout_p, scale=1.0)
