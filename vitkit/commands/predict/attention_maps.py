"""Attention maps for visualisation: attention rollout and the last layer's attention, per image.

Rollout (Abnar & Zuidema, 2020): average each layer's heads, add the identity for the residual path
(``0.5 A + 0.5 I``), renormalise rows, and multiply the layers' matrices from the first to the last.
The map is the pooled token's row: the class token's, or for mean-pooled models without one, the
mean of the patch tokens' rows (mean-token attention). Maps are min-max scaled to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from vitkit.errors import UserError


@dataclass
class AttentionMaps:
    """One image's maps, ``(H, W)`` in [0, 1] at the image's size; ``pooling`` is ``"cls"`` or ``"mean"``."""

    rollout: torch.Tensor
    last: torch.Tensor
    pooling: str


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """The attention module of every transformer block, in order; each must have ``attention_map``."""
    from vitkit.layers.block import Block
    from vitkit.registry import ATTENTION

    layers = [block.attn for block in model.modules() if isinstance(block, Block)]
    if not layers:
        raise UserError(f"{type(model).__name__} has no vitkit transformer blocks to draw attention maps from")
    for attn in layers:
        if not callable(getattr(attn, "attention_map", None)):
            names = [e.name for e in ATTENTION.entries() if e.factory is type(attn)]
            name = repr(names[0]) if names else type(attn).__name__
            raise UserError(
                f"attention {name} does not expose its attention weights (no attention_map method), "
                "so no attention maps can be drawn for this model"
            )
    return layers


@torch.no_grad()
def layer_attentions(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's head-averaged attention ``(B, N, N)`` for the batch ``x``, first block first."""
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(reduce(module.attention_map(args[0]).float(), "b h n m -> b n m", "mean"))

    handles = [attn.register_forward_pre_hook(hook) for attn in attention_layers(model)]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return captured


def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout ``(B, N, N)``: residual-adjusted, row-normalised layer maps multiplied in order."""
    eye = torch.eye(attentions[0].shape[-1], device=attentions[0].device)
    result = eye.expand_as(attentions[0])
    for attn in attentions:
        mixed = 0.5 * attn + 0.5 * eye
        result = (mixed / mixed.sum(dim=-1, keepdim=True)) @ result
    return result


def _pooled_row(attn: torch.Tensor, prefix: int, cls: bool) -> torch.Tensor:
    """What the pooled representation attends to among the patch tokens: ``(B, patches)``."""
    patches = attn[:, :, prefix:]
    return patches[:, 0] if cls else reduce(patches[:, prefix:], "b n m -> b m", "mean")


def _to_grid(row: torch.Tensor) -> torch.Tensor:
    """``(B, patches)`` -> ``(B, gh, gw)`` min-max scaled to [0, 1] (square patch grid)."""
    side = math.isqrt(row.shape[1])
    if side * side != row.shape[1]:
        raise UserError(f"cannot lay {row.shape[1]} patch tokens out as a square grid for an attention map")
    grid = rearrange(row, "b (gh gw) -> b gh gw", gh=side)
    low = reduce(grid, "b gh gw -> b 1 1", "min")
    high = reduce(grid, "b gh gw -> b 1 1", "max")
    return (grid - low) / (high - low).clamp_min(1e-12)


def upsample(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(gh, gw)`` map bilinearly resized to ``size`` = (H, W), kept in [0, 1]."""
    up = F.interpolate(rearrange(grid, "gh gw -> 1 1 gh gw"), size=size, mode="bilinear", align_corners=False)
    return rearrange(up, "1 1 h w -> h w").clamp(0.0, 1.0).cpu()


def attention_maps(model: nn.Module, x: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[AttentionMaps]:
    """Rollout and last-layer maps for the model input ``x`` ``(B, C, S, S)``, each resized to ``sizes[i]``."""
    attentions = layer_attentions(model, x)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    cls = prefix > 0 and getattr(model, "global_pool", "token") == "token"
    rolled = _to_grid(_pooled_row(rollout(attentions), prefix, cls))
    last = _to_grid(_pooled_row(attentions[-1], prefix, cls))
    pooling = "cls" if cls else "mean"
    return [
        AttentionMaps(upsample(r, size), upsample(l_, size), pooling)
        for r, l_, size in zip(rolled, last, sizes, strict=True)
    ]
