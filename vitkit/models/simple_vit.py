"""SimpleViT (Beyer et al. 2022, "Better plain ViT baselines for ImageNet-1k")."""

from __future__ import annotations

from typing import Any

from torch import nn

from vitkit.models.factory import register_config
from vitkit.models.vit import VisionTransformer


class SimpleViT(VisionTransformer):
    """Plain ViT baseline: fixed 2-D sin-cos positions, no class token, mean pooling, no dropout,
    a single linear head initialised at zero.

    Weights keep timm's key names (a timm ViT with ``class_token=False, global_pool="avg"`` and
    ``fc_norm=False`` holds the same tensors, positions aside).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        attention: str | dict[str, Any] = "softmax",
        qk_norm: bool = False,
        patch_drop_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            class_token=False,
            global_pool="avg",
            fc_norm=False,
            pos_embed="sincos",
            attention=attention,
            qk_norm=qk_norm,
            patch_drop_rate=patch_drop_rate,
        )
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)


register_config(SimpleViT, "simple_vit_small_patch16_224", "SimpleViT-S/16 at 224 px (Beyer et al. 2022).")
register_config(
    SimpleViT,
    "simple_vit_tiny_patch4_32",
    "SimpleViT-Ti/4 for 32 px images (CIFAR): sin-cos positions, mean pooling.",
    img_size=32,
    patch_size=4,
    num_classes=10,
    embed_dim=192,
    depth=12,
    num_heads=3,
)
register_config(
    SimpleViT,
    "simple_vit_nano_patch4_16",
    "A 4-layer, 64-dim SimpleViT for 16 px images (digits).",
    img_size=16,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
)
