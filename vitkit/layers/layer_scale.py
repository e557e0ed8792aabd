"""LayerScale (Touvron et al. 2021, CaiT): a learned per-channel gain on a residual branch."""

from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """Multiply each channel by a learned ``gamma`` that starts at ``init_values`` (timm's key: ``gamma``)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
