"""``linear``: kernelized linear attention (Katharopoulos et al. 2020), O(N) in the sequence length."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import einsum

from vitkit.layers.attention.base import Attention
from vitkit.registry import register_attention

FEATURE_MAPS = {
    "elu": lambda t: F.elu(t) + 1.0,
    "relu": F.relu,
}


@register_attention("linear")
class LinearAttention(Attention):
    """Kernelized linear attention, O(N): phi(q) (sum_j phi(k_j) v_j^T) / (phi(q) . sum_j phi(k_j)).

    ``feature_map`` is ``"elu"`` (elu + 1, the paper's choice) or ``"relu"``. No N x N weight
    matrix is ever formed, so there is no ``attention_map`` and ``attn_drop`` is ignored.
    The key-value sums run in float32 so long sequences stay finite under fp16/bf16.
    """

    def __init__(
        self, dim: int, num_heads: int = 8, *, feature_map: str = "elu", eps: float = 1e-6, **kwargs: Any
    ) -> None:
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {', '.join(map(repr, FEATURE_MAPS))}, got {feature_map!r}")
        super().__init__(dim, num_heads, **kwargs)
        self.feature_map = FEATURE_MAPS[feature_map]
        self.eps = eps

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        dtype = v.dtype
        q, k, v = self.feature_map(q.float()), self.feature_map(k.float()), v.float()
        kv = einsum(k, v, "b h n d, b h n e -> b h d e")  # sum over tokens: the O(N) step
        norm = einsum(q, k.sum(dim=2), "b h n d, b h d -> b h n")
        out = einsum(q, kv, "b h n d, b h d e -> b h n e") / (norm.unsqueeze(-1) + self.eps)
        return out.to(dtype)
