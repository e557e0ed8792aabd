"""``talking_heads``: talking-heads attention (Shazeer et al. 2020), heads mixed before and after softmax."""

from __future__ import annotations

from typing import Any

import torch
from einops import einsum
from torch import nn

from vitkit.layers.attention.heads import head_dim, merge_heads, split_qkv
from vitkit.registry import register_attention


@register_attention("talking_heads")
class TalkingHeadsAttention(nn.Module):
    """Talking-heads attention: learned heads-by-heads mixes of the logits and of the softmax weights.

    Each mixing matrix is the identity plus a learned offset that starts at zero (and that weight
    decay pulls back to zero), so training starts from plain softmax attention. The N x N
    weights are formed explicitly (no fused kernel).
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
        self.scale = head_dim(dim, num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.mix_logits = nn.Parameter(torch.zeros(num_heads, num_heads))  # offsets from the identity
        self.mix_weights = nn.Parameter(torch.zeros(num_heads, num_heads))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _mix(self, scores: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Mix heads: head g gets sum_h (I + offset)[g, h] * scores[h]."""
        mix = torch.eye(self.num_heads, device=offset.device) + offset
        return einsum(scores, mix.to(scores.dtype), "b h n m, g h -> b g n m")

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        logits = self._mix(einsum(q, k, "b h n d, b h m d -> b h n m") * self.scale, self.mix_logits)
        return self._mix(logits.softmax(dim=-1), self.mix_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        weights = self.attn_drop(self._weights(q, k))
        out = einsum(weights, v, "b h n m, b h m d -> b h n d")
        return self.proj_drop(self.proj(merge_heads(out)))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` weights applied to the values (after the post-softmax mix)."""
        q, k, _ = split_qkv(self.qkv(x), self.num_heads)
        return self._weights(q, k)
