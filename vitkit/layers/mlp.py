"""The transformer's position-wise feed-forward networks, registered by name (``model.mlp``).

Contract: ``__init__(self, dim, hidden_dim, drop=0.0, **kwargs)``, ``forward(x)``:
``(B, N, dim) -> (B, N, dim)``. Plugins add their own with ``vitkit.register_mlp``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.registry import register_mlp


@register_mlp("mlp")
class Mlp(nn.Module):
    """Linear -> GELU -> dropout -> Linear -> dropout (timm's Mlp)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, **kwargs: Any) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


@register_mlp("swiglu")
class SwiGLU(nn.Module):
    """SwiGLU (Shazeer 2020): fc2(SiLU(x W_g) * x W_x), as in EVA-02 and LLaMA (timm's SwiGLU keys).

    Three matrices instead of two: at the same ``mlp_ratio`` it has 1.5x the MLP parameters;
    ``mlp_ratio`` times 2/3 matches the plain MLP's.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, **kwargs: Any) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden_dim)
        self.fc1_x = nn.Linear(dim, hidden_dim)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(F.silu(self.fc1_g(x)) * self.fc1_x(x))))
