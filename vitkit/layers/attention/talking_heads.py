"""``talking_heads``: talking-heads attention (Shazeer et al. 2020), heads mixed before and after softmax."""

from __future__ import annotations

from typing import Any

import torch
from einops import einsum
from torch import nn

from vitkit.layers.attention.base import Attention
from vitkit.registry import register_attention


@register_attention("talking_heads")
class TalkingHeadsAttention(Attention):
    """Talking-heads attention: learned heads-by-heads mixes of the logits and of the softmax weights.

    Each mixing matrix is the identity plus a learned offset that starts at zero (and that weight
    decay pulls back to zero), so training starts from plain softmax attention. The N x N
    weights are formed explicitly (no fused kernel).
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.mix_logits = nn.Parameter(torch.zeros(num_heads, num_heads))  # offsets from the identity
        self.mix_weights = nn.Parameter(torch.zeros(num_heads, num_heads))

    def _mix(self, scores: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """Mix heads: head g gets sum_h (I + offset)[g, h] * scores[h]."""
        mix = torch.eye(self.num_heads, device=offset.device) + offset
        return einsum(scores, mix.to(scores.dtype), "b h n m, g h -> b g n m")

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The weights applied to the values (after the post-softmax mix)."""
        logits = self._mix(einsum(q, k, "b h n d, b h m d -> b h n m") * self.scale, self.mix_logits)
        return self._mix(logits.softmax(dim=-1), self.mix_weights)
