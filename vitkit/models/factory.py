"""Named model configurations and ``create_model``."""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any

from torch import nn

from vitkit.errors import UserError
from vitkit.models.vit import VisionTransformer
from vitkit.registry import MODELS


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` (``None`` values dropped) replace its defaults."""
    return MODELS.create(name, **overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch pattern (``"vit_*"``)."""
    return MODELS.list(pattern)


def accepted_kwargs(name: str) -> set[str] | None:
    """Keyword names a registered model takes; ``None`` when it takes any (``**kwargs``)."""
    factory = MODELS.get(name).factory
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        if isinstance(factory, partial):
            return set(inspect.signature(factory.func).parameters) - {"self"}
        return None
    return {p.name for p in params if p.name != "self"}


def register_config(cls: type[nn.Module], name: str, doc: str, **config: Any) -> None:
    """Register ``name``: ``cls`` built with ``config``; its signature shows the config's values as defaults."""

    def factory(**overrides: Any) -> nn.Module:
        unknown = set(overrides) - set(inspect.signature(cls).parameters)
        if unknown:
            raise UserError(f"{name} has no option {sorted(unknown)[0]!r}")
        return cls(**{**config, **overrides})

    factory.__doc__ = doc
    factory.__name__ = name
    signature = inspect.signature(cls)
    factory.__signature__ = signature.replace(
        parameters=[p.replace(default=config.get(p.name, p.default)) for p in signature.parameters.values()]
    )
    MODELS.add(name, factory)


def _register_vit(name: str, doc: str, **config: Any) -> None:
    register_config(VisionTransformer, name, doc, **config)


_register_vit("vit", "ViT with timm's ViT-Base defaults; set every size yourself.")
_register_vit(
    "vit_tiny_patch16_224",
    "ViT-Ti/16 at 224 px (5.7 M params).",
    patch_size=16,
    embed_dim=192,
    depth=12,
    num_heads=3,
)
_register_vit(
    "vit_small_patch16_224",
    "ViT-S/16 at 224 px (22 M params).",
    patch_size=16,
    embed_dim=384,
    depth=12,
    num_heads=6,
)
_register_vit(
    "vit_base_patch16_224",
    "ViT-B/16 at 224 px (86.6 M params).",
    patch_size=16,
    embed_dim=768,
    depth=12,
    num_heads=12,
)
_register_vit(
    "vit_tiny_patch4_32",
    "ViT-Ti/4 for 32 px images (CIFAR): 64 tokens.",
    img_size=32,
    patch_size=4,
    num_classes=10,
    embed_dim=192,
    depth=12,
    num_heads=3,
)
_register_vit(
    "vit_small_patch4_32",
    "ViT-S/4 for 32 px images (CIFAR): 64 tokens.",
    img_size=32,
    patch_size=4,
    num_classes=10,
    embed_dim=384,
    depth=12,
    num_heads=6,
)
_register_vit(
    "vit_nano_patch2_8",
    "A 4-layer, 64-dim ViT for 8 px images (digits): 16 tokens.",
    img_size=8,
    patch_size=2,
    in_chans=1,
    num_classes=10,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    class_token=False,
    global_pool="avg",
    fc_norm=False,
    pos_embed="sincos",
)
_register_vit(
    "vit_nano_patch4_16",
    "A 4-layer, 64-dim ViT for 16 px images (digits upsampled): 16 tokens.",
    img_size=16,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    class_token=False,
    global_pool="avg",
    fc_norm=False,
    pos_embed="sincos",
)
