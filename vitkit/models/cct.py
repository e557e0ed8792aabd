"""Compact Convolutional Transformer (Hassani et al. 2021): conv tokenizer + sequence pooling."""

from __future__ import annotations

from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from vitkit.layers import Block, BlockStack, GradCheckpointing, PatchDropout, sincos_2d
from vitkit.models.factory import register_config


class ConvTokenizer(nn.Module):
    """``num_layers`` x (conv ``kernel_size`` stride 1, ReLU, 3x3 max-pool stride 2); each output
    pixel of the last layer is a token."""

    def __init__(
        self, img_size: int, in_chans: int, embed_dim: int, num_layers: int = 2, kernel_size: int = 3, hidden: int = 64
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_conv_layers must be >= 1, got {num_layers}")
        channels = [in_chans] + [hidden] * (num_layers - 1) + [embed_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size, stride=1, padding=kernel_size // 2, bias=False),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            ]
        self.layers = nn.Sequential(*layers)
        self.img_size = img_size
        self.grid_size = img_size
        for _ in range(num_layers):
            self.grid_size = (self.grid_size - 1) // 2 + 1  # what a 3x3, stride-2, pad-1 pool leaves
        self.num_patches = self.grid_size**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected {self.img_size}x{self.img_size} images, got {tuple(x.shape[-2:])}")
        return rearrange(self.layers(x), "b d h w -> b (h w) d")


class SequencePool(nn.Module):
    """Attention pooling over tokens: a softmax over one learned score per token weights their mean."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = rearrange(self.attention_pool(x), "b n 1 -> b n").softmax(dim=1)
        return torch.einsum("bn,bnd->bd", weights, x)


class CompactTransformer(GradCheckpointing, nn.Module):
    """CCT: a small convolutional stem makes the tokens (no patch grid, no class token), a
    transformer encoder mixes them, sequence pooling reads them out, a linear head classifies.
    ``patch_drop_rate``: in training, drop that share of the tokens (after their positions)."""

    def __init__(
        self,
        *,
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 256,
        depth: int = 7,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        num_conv_layers: int = 1,
        kernel_size: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        pos_embed: Literal["learn", "sincos", "none"] = "learn",
        attention: str | dict[str, Any] = "softmax",
        patch_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if pos_embed not in ("learn", "sincos", "none"):
            raise ValueError(f"pos_embed must be 'learn', 'sincos' or 'none', got {pos_embed!r}")
        self.img_size, self.in_chans, self.num_classes, self.embed_dim = img_size, in_chans, num_classes, embed_dim
        self.pos_embed_kind = pos_embed
        self.tokenizer = ConvTokenizer(img_size, in_chans, embed_dim, num_conv_layers, kernel_size)
        n = self.tokenizer.num_patches
        if pos_embed == "learn":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.2)
        elif pos_embed == "sincos":
            table = rearrange(sincos_2d(self.tokenizer.grid_size, embed_dim), "n d -> 1 n d")
            self.register_buffer("pos_embed", table, persistent=False)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)
        self.patch_drop = PatchDropout(patch_drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = BlockStack(
            *[
                Block(embed_dim, num_heads, mlp_ratio, True, drop_rate, attn_drop_rate, rate, attention)
                for rate in rates
            ]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.pool = SequencePool(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal(0.02) linear layers, Kaiming-normal convolutions, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokenizer(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed.to(x.dtype)
        x, _ = self.patch_drop(x)
        return self.norm(self.blocks(self.pos_drop(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


register_config(
    CompactTransformer,
    "cct_7_3x1_32",
    "CCT-7/3x1 for 32 px images (CIFAR): one 3x3 conv layer, 7 blocks, 256 dim, 256 tokens.",
)
register_config(
    CompactTransformer,
    "cct_2_3x2_32",
    "CCT-2/3x2 for 32 px images (CIFAR): two 3x3 conv layers, 2 blocks, 128 dim, 64 tokens.",
    embed_dim=128,
    depth=2,
    num_heads=2,
    mlp_ratio=1.0,
    num_conv_layers=2,
)
register_config(
    CompactTransformer,
    "cct_nano_patch2_8",
    "A 2-block, 64-dim CCT for the 8 px digits: one conv layer, 16 tokens.",
    img_size=8,
    in_chans=1,
    embed_dim=64,
    depth=2,
    num_heads=4,
    attn_drop_rate=0.0,
    drop_path_rate=0.0,
)
register_config(
    CompactTransformer,
    "cct_nano_patch4_16",
    "A 2-block, 64-dim CCT for 16 px images (digits): two conv layers, 16 tokens.",
    img_size=16,
    in_chans=1,
    embed_dim=64,
    depth=2,
    num_heads=4,
    num_conv_layers=2,
    attn_drop_rate=0.0,
    drop_path_rate=0.0,
)
