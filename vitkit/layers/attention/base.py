"""``Attention``: the base class of every attention variant (built-in or plugin).

It owns what all variants share: the fused ``qkv`` projection, the einops head split and merge,
optional per-head q/k LayerNorm (``q_norm``/``k_norm``), attention dropout, the output projection
``proj`` and its dropout, with timm's state-dict keys. A variant overrides one method:

- ``scores(q, k) -> weights (B, heads, N, N)``: the attention weights; ``forward`` applies them to
  the values and ``attention_map`` comes for free;
- or ``attend(q, k, v) -> out (B, heads, N, head_dim)``: for kernels that never form the N x N
  matrix (fused SDPA, linear attention). Override both for a fast path plus a map for plots.

``heads(x)`` and ``project(out)`` are the two halves of ``forward``, for variants that need the
block input too (an output gate, say).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitkit.layers.attention.heads import head_dim, merge_heads, split_qkv


class Attention(nn.Module):
    """Multi-head attention scaffolding: subclass it and override ``scores`` or ``attend``.

    ``scale`` is ``head_dim ** -0.5``; ``dropout_p`` is the attention dropout probability while
    training and 0 in eval (for fused kernels). ``qk_norm`` adds LayerNorm on each head's q and k;
    ``rope`` (given by the model for rotary position encodings) rotates them after that.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qk_norm: bool = False,
        rope: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if type(self).scores is Attention.scores and type(self).attend is Attention.attend:
            raise TypeError(f"{type(self).__name__} must override scores(q, k) or attend(q, k, v)")
        self.num_heads = num_heads
        self.head_dim = head_dim(dim, num_heads)
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        # QK-norm (Dehghani et al. 2023): LayerNorm on each head's queries and keys (timm's q_norm/k_norm)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.rope = rope  # a rotary position encoding (model.pos_embed = "rope2d"), shared by the blocks
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @property
    def dropout_p(self) -> float:
        """The attention dropout probability to pass a fused kernel: ``attn_drop.p`` in training, else 0."""
        return self.attn_drop.p if self.training else 0.0

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, N, dim)`` -> q, k, v of shape ``(B, heads, N, head_dim)``, q and k normed (and rotated)."""
        q, k, v = split_qkv(self.qkv(x), self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, k)
        return q, k, v

    def project(self, out: torch.Tensor) -> torch.Tensor:
        """``(B, heads, N, head_dim)`` -> merged heads, output projection and dropout ``(B, N, dim)``."""
        return self.proj_drop(self.proj(merge_heads(out)))

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The ``(B, heads, N, N)`` attention weights (row i: how token i mixes the values)."""
        raise NotImplementedError(f"{type(self).__name__} does not form attention weights")

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The heads' outputs ``(B, heads, N, head_dim)``; by default dropout(scores(q, k)) @ v."""
        return self.attn_drop(self.scores(q, k)) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.attend(*self.heads(x)))

    def _attention_map(self, x: torch.Tensor) -> torch.Tensor:
        q, k, _ = self.heads(x)
        return self.scores(q, k)

    @property
    def attention_map(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``attention_map(x)``: the ``(B, heads, N, N)`` weights for ``x``, for variants with ``scores``.

        Variants that only override ``attend`` have no such attribute (``hasattr`` is false).
        """
        if type(self).scores is Attention.scores:
            raise AttributeError(f"{type(self).__name__} forms no attention weights (it has no scores method)")
        return self._attention_map
