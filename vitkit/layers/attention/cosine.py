"""``cosine``: scaled cosine attention with a learnable per-head temperature (Swin Transformer V2)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitkit.layers.attention.base import Attention
from vitkit.registry import register_attention


@register_attention("cosine")
class CosineAttention(Attention):
    """Scaled cosine attention (Swin-V2): softmax(cos(q, k) * s_h) v, with a learnable per-head scale s_h.

    ``s_h = exp(logit_scale_h)``, started at ``init_scale`` (10) and capped at ``max_scale`` (100).
    Cosine similarity keeps logits bounded, which stabilises large or long-trained models.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, *, init_scale: float = 10.0, max_scale: float = 100.0, **kwargs: Any
    ) -> None:
        super().__init__(dim, num_heads, **kwargs)
        if not 0 < init_scale <= max_scale:
            raise ValueError(f"need 0 < init_scale <= max_scale, got {init_scale} and {max_scale}")
        self.logit_scale = nn.Parameter(torch.full((num_heads,), math.log(init_scale)))  # 1-D: no weight decay
        self.max_log_scale = math.log(max_scale)

    def _unit(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length q (times each head's scale) and k."""
        scale = rearrange(self.logit_scale.clamp(max=self.max_log_scale).exp(), "h -> h 1 1")
        return F.normalize(q, dim=-1) * scale.to(q.dtype), F.normalize(k, dim=-1)

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = self._unit(q, k)
        return (q @ k.transpose(-2, -1)).softmax(dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k = self._unit(q, k)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p, scale=1.0)
