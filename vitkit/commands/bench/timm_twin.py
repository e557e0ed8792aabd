"""``vitkit bench --vs timm``: timm's ``VisionTransformer`` built with a vitkit ViT's configuration and
regularisation and a copy of its weights, so both do the same work per step."""

from __future__ import annotations

from typing import Any

from torch import nn

from vitkit.errors import UserError


def vit_config(model: nn.Module) -> dict[str, Any]:
    """The timm ``VisionTransformer`` keyword arguments that rebuild a vitkit ViT (``UserError`` if none do):
    ``timm_bridge.timm_config`` plus the same regularisation, so a training step does the same work."""
    from vitkit.models import VisionTransformer
    from vitkit.models.timm_bridge import timm_config

    if not isinstance(model, VisionTransformer):
        raise UserError(f"--vs timm: {type(model).__name__} is not vitkit's VisionTransformer")
    if model.pos_embed_kind in ("sincos", "rope2d") or model.mlp_kind != "mlp":  # not the same work in timm
        raise UserError("--vs timm: timm's ViT has no fixed sin-cos or rotary positions or SwiGLU; use a 'learn' model")
    try:
        config = timm_config(model)
    except UserError as err:
        raise UserError(f"--vs timm: {err}") from None
    block = model.blocks[0]
    rate = model.pos_drop.p
    config.update(
        drop_rate=rate,
        pos_drop_rate=rate,
        proj_drop_rate=rate,
        attn_drop_rate=block.attn.attn_drop.p,
        drop_path_rate=model.blocks[-1].drop_path1.p,
    )
    return config


def timm_twin(model: nn.Module) -> nn.Module:
    """timm's ``VisionTransformer`` with ``model``'s configuration and a copy of its weights."""
    from vitkit.models.timm_bridge import to_timm_model

    config = vit_config(model)  # checks and the regularisation; timm_bridge builds and loads
    regularisation = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
    twin = to_timm_model(model, **{key: config[key] for key in regularisation})
    return twin.to(next(model.parameters()).device)
