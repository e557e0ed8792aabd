"""``softmax``: standard multi-head attention through PyTorch's fused SDPA kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitkit.layers.attention.base import Attention
from vitkit.registry import register_attention


@register_attention("softmax")
class SoftmaxAttention(Attention):
    """Multi-head scaled dot-product softmax attention (fused SDPA kernels); ``qk_norm`` optional."""

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)), computed explicitly (for visualisation)."""
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
