"""A vitkit plugin: sigmoid-gated softmax attention, registered in vitkit's attention registry as ``gated``.

Importing this module registers the component; vitkit does so at start-up through the
``vitkit`` entry point declared in pyproject.toml. It has no other effect.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import nn

import vitkit
from vitkit.layers.attention import SoftmaxAttention

__all__ = ["GatedAttention"]


@vitkit.register_attention("gated")
class GatedAttention(SoftmaxAttention):
    """Softmax attention whose output is gated per head and channel by sigmoid(x W_g) (Qiu et al. 2025).

    The gate is computed from the block's input and applied to each head's output before the
    output projection; it lets a head switch itself off for a token and removes attention sinks.
    ``attention_map`` is the softmax weights (before the gate).
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.gate = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = rearrange(torch.sigmoid(self.gate(x)), "b n (h d) -> b h n d", h=self.num_heads)
        return self.project(self.attend(*self.heads(x)) * gate)
