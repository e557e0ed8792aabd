"""Stochastic depth (drop a residual branch per sample) and patch dropout (drop patch tokens per sample)."""

from __future__ import annotations

import torch
from einops import repeat
from torch import nn


class DropPath(nn.Module):
    """Zero the whole residual branch of a sample with probability ``p`` (scaled when kept)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchDropout(nn.Module):
    """In training, keep a random ``1 - rate`` share of each image's patch tokens (FLIP; timm's
    ``patch_drop_rate``); the ``num_prefix_tokens`` first tokens (class, registers) are always kept.
    In eval, or at rate 0, every token is kept.

    ``forward(x) -> (tokens, kept)``: ``kept`` is ``(B, K)``, the indices (ascending) of the kept
    patches among all patches, for position encodings applied later (rope), or ``None`` when all are.
    """

    def __init__(self, rate: float = 0.0, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"patch_drop_rate must be in [0, 1), got {rate}")
        self.rate, self.num_prefix_tokens = rate, num_prefix_tokens

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.rate == 0.0 or not self.training:
            return x, None
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        batch, count = patches.shape[:2]
        keep = max(1, int(count * (1.0 - self.rate)))
        kept = torch.rand(batch, count, device=x.device).argsort(dim=1)[:, :keep].sort(dim=1).values
        patches = patches.gather(1, repeat(kept, "b k -> b k d", d=patches.shape[-1]))
        return torch.cat([prefix, patches], dim=1), kept

    def extra_repr(self) -> str:
        return f"rate={self.rate}, num_prefix_tokens={self.num_prefix_tokens}"
