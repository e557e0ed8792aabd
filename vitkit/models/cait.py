"""CaiT (Touvron et al. 2021, "Going deeper with Image Transformers"): LayerScale + class attention."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vitkit.layers import Block, BlockStack, DropPath, GradCheckpointing, LayerScale, Mlp, PatchDropout, PatchEmbed
from vitkit.models.factory import register_config


class ClassAttention(nn.Module):
    """The class token queries all tokens (itself and the patches); only the class token is updated."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, 1 + N, dim)`` with the class token first -> new class token ``(B, 1, dim)``."""
        q = rearrange(self.q(x[:, :1]), "b 1 (h d) -> b h 1 d", h=self.num_heads)
        k = rearrange(self.k(x), "b n (h d) -> b h n d", h=self.num_heads)
        v = rearrange(self.v(x), "b n (h d) -> b h n d", h=self.num_heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(rearrange(out, "b h 1 d -> b 1 (h d)"))


class ClassAttentionBlock(nn.Module):
    """Pre-norm block with LayerScale that updates the class token from the frozen patch tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, attn_drop)
        self.ls1 = LayerScale(dim, init_values)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, cls: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([cls, patches], dim=1)
        cls = cls + self.drop_path(self.ls1(self.attn(self.norm1(tokens))))
        return cls + self.drop_path(self.ls2(self.mlp(self.norm2(cls))))


class CaiT(GradCheckpointing, nn.Module):
    """Self-attention blocks with LayerScale over patches only, then class-attention blocks that
    read the patches into a late class token; the class token is classified.

    ``attention`` (registry name or spec) is used by the patch blocks; the paper's talking-heads
    attention is ``attention = "talking_heads"`` where that variant is registered.
    ``patch_drop_rate``: in training, drop that share of the patch tokens (after their positions).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        depth_token_only: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        init_values: float = 1e-5,
        attention: str | dict[str, Any] = "softmax",
        patch_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth_token_only < 1:
            raise ValueError(f"depth_token_only must be >= 1, got {depth_token_only}")
        if init_values <= 0:
            raise ValueError(f"init_values (LayerScale) must be > 0, got {init_values}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        self.patch_drop = PatchDropout(patch_drop_rate)
        self.blocks = BlockStack(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    drop_path_rate,  # the paper keeps the rate constant over depth
                    attention,
                    init_values=init_values,
                )
                for _ in range(depth)
            ]
        )
        self.blocks_token_only = nn.ModuleList(
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values=init_values)
            for _ in range(depth_token_only)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal(0.02) for linear layers, positions and the class token; zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.patch_embed.proj
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1.0 / proj.weight[0].numel()))
        nn.init.zeros_(proj.bias)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> normed ``(B, 1 + patches, dim)`` tokens, class token first."""
        patches, _ = self.patch_drop(self.patch_embed(x) + self.pos_embed)
        patches = self.blocks(self.pos_drop(patches))
        # a copy, not a view of the parameter: torch's module tracker (FlopCounterMode) rejects those under no_grad
        cls = repeat(self.cls_token, "1 1 d -> b 1 d", b=x.shape[0]).clone()
        for block in self.blocks_token_only:
            cls = block(cls, patches)
        return self.norm(torch.cat([cls, patches], dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register_config(CaiT, "cait_xxs24_224", "CaiT-XXS-24 at 224 px: 24 LayerScale blocks + 2 class-attention blocks.")
register_config(
    CaiT,
    "cait_xxs_patch4_32",
    "CaiT-XXS for 32 px images (CIFAR): 12 + 2 blocks, 192 dim.",
    img_size=32,
    patch_size=4,
    num_classes=10,
    depth=12,
    init_values=0.1,
)
register_config(
    CaiT,
    "cait_nano_patch4_16",
    "A 3 + 1 block, 64-dim CaiT for 16 px images (digits).",
    img_size=16,
    patch_size=4,
    in_chans=1,
    num_classes=10,
    embed_dim=64,
    depth=3,
    depth_token_only=1,
    num_heads=4,
    mlp_ratio=2.0,
    init_values=0.1,
)
