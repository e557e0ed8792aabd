"""DeiT with a distillation token (Touvron et al. 2021), timm's ``VisionTransformerDistilled`` keys."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from vitkit.models.factory import register_config
from vitkit.models.vit import VisionTransformer


class DistilledVisionTransformer(VisionTransformer):
    """ViT with a class token and a distillation token, each with its own linear head.

    ``forward`` returns the average of the two heads' logits, in training too, so the model trains
    with any plain loss. The ``distillation`` loss sets ``model.distilled_training = True`` (through its
    ``prepare_student``, which the trainer calls; a plugin's loss can do the same); then, in training
    mode only, ``forward`` returns ``(class_logits, distillation_logits)``. Evaluation always gets
    the average, as in the paper. The attribute and keys (``dist_token``, ``head_dist``) are timm's.
    """

    distilled_training: bool = False

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pos_embed: Literal["learn", "sincos", "none"] = "learn",
        attention: str | dict[str, Any] = "softmax",
        init_values: float | None = None,
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
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            class_token=True,
            global_pool="token",
            pos_embed=pos_embed,
            attention=attention,
            init_values=init_values,
            qk_norm=qk_norm,
            patch_drop_rate=patch_drop_rate,
        )

    def init_extra_tokens(self, embed_dim: int) -> None:
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def init_extra_heads(self, embed_dim: int, num_classes: int) -> None:
        self.head_dist = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Class-token and distillation-token logits: averaged, or both (``distilled_training``)."""
        cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        if pre_logits:
            return (cls + dist) / 2
        cls, dist = self.head(cls), self.head_dist(dist)
        if self.distilled_training and self.training:
            return cls, dist
        return (cls + dist) / 2


register_config(
    DistilledVisionTransformer,
    "deit_tiny_distilled_patch16_224",
    "DeiT-Ti/16 with a distillation token at 224 px (timm's deit_tiny_distilled_patch16_224).",
)
register_config(
    DistilledVisionTransformer,
    "deit_small_distilled_patch16_224",
    "DeiT-S/16 with a distillation token at 224 px.",
    embed_dim=384,
    num_heads=6,
)
register_config(
    DistilledVisionTransformer,
    "deit_tiny_distilled_patch4_32",
    "DeiT-Ti/4 with a distillation token for 32 px images (CIFAR).",
    img_size=32,
    patch_size=4,
    num_classes=10,
)
register_config(
    DistilledVisionTransformer,
    "deit_nano_distilled_patch4_16",
    "A 4-layer, 64-dim DeiT with a distillation token for 16 px images (digits).",
    img_size=16,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    embed_dim=64,
    depth=4,
    num_heads=4,
    mlp_ratio=2.0,
    pos_embed="sincos",
)
