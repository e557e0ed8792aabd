"""A pre-norm transformer block."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.layers.drop import DropPath
from vitkit.layers.layer_scale import LayerScale
from vitkit.registry import ATTENTION, MLP, split_spec

AttentionSpec = str | dict[str, Any] | type[nn.Module] | Callable[..., nn.Module]


def build_attention(attention: AttentionSpec, **kwargs: Any) -> nn.Module:
    """An attention module from a registry name, a ``{"name": ...}`` spec, or a module class (or factory).

    Options in ``kwargs`` with value ``None`` are left out, so attentions without them keep working.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if callable(attention):
        name, factory, options = getattr(attention, "__name__", repr(attention)), attention, {}
    else:
        name, options = split_spec(attention)
        factory = ATTENTION.get(name).factory
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params}
        for key in sorted(kwargs.keys() - accepted - {"dim", "num_heads", "qkv_bias", "attn_drop", "proj_drop"}):
            raise ValueError(f"attention {name!r} has no {key!r} option")
    return factory(**{**options, **kwargs})


class Block(nn.Module):
    """``x + DropPath(LS(Attention(LN(x))))`` then ``x + DropPath(LS(Mlp(LN(x))))``.

    ``attention`` is a registry name or ``{"name": ..., **kwargs}`` spec (see ``vitkit list attention``).
    ``init_values`` turns on LayerScale (timm keys ``ls1.gamma``/``ls2.gamma``); ``qk_norm`` is passed
    to the attention only when set. ``mlp`` is an MLP registry name or spec (``vitkit list mlp``);
    ``rope`` a rotary position module the attention applies to q and k.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        attention: AttentionSpec = "softmax",
        init_values: float | None = None,
        qk_norm: bool = False,
        mlp: str | dict[str, Any] = "mlp",
        rope: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = build_attention(
            attention,
            dim=dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            qk_norm=True if qk_norm else None,
            rope=rope,
        )
        if rope is not None and getattr(self.attn, "rope", None) is not rope:
            raise ValueError(
                f"a rotary position encoding needs an attention on vitkit.Attention, not {type(self.attn).__name__}"
            )
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP.create(mlp, dim=dim, hidden_dim=int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class BlockStack(nn.Sequential):
    """Blocks run in order (an ``nn.Sequential``: the keys stay ``blocks.0...``); with
    ``grad_checkpointing`` on, each block keeps only its input for backward and recomputes its
    activations there (``torch.utils.checkpoint``, non-reentrant: AMP, compile and DDP/FSDP work,
    and dropout draws the same numbers again, so the gradients are the same)."""

    grad_checkpointing: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return super().forward(x)
        for block in self:
            x = checkpoint(block, x, use_reentrant=False)
        return x


class GradCheckpointing:
    """Mixin for models built on ``BlockStack``s: timm's ``set_grad_checkpointing``."""

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block stack's activations in backward (``enable``) or keep them (the default)."""
        stacks = [module for module in self.modules() if isinstance(module, BlockStack)]  # type: ignore[attr-defined]
        if not stacks:
            raise ValueError(f"{type(self).__name__} has no BlockStack to checkpoint")
        for stack in stacks:
            stack.grad_checkpointing = enable
