"""ViT for small datasets (Lee et al. 2021): shifted patch tokenization + locality self-attention."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vitkit.layers.attention.lsa import LocalitySelfAttention
from vitkit.layers.patch_embed import check_img_size
from vitkit.models.factory import register_config
from vitkit.models.vit import VisionTransformer
from vitkit.registry import ATTENTION


class ShiftedPatchTokenizer(nn.Module):
    """SPT: the image and its four diagonal half-patch shifts, stacked by channel, cut into patches,
    layer-normed and projected to ``embed_dim``; each token sees a wider neighbourhood."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.strict_img_size = True  # off: any square multiple of patch_size (layers.patch_embed.check_img_size)
        self.shift = max(patch_size // 2, 1)
        patch_dim = 5 * in_chans * patch_size**2
        self.norm = nn.LayerNorm(patch_dim, eps=1e-6)
        self.proj = nn.Linear(patch_dim, embed_dim)

    def shifted(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, 5C, H, W)``: the image, then shifts to lower-right, lower-left,
        upper-right, upper-left (zero-filled)."""
        s = self.shift
        pads = [(s, -s, s, -s), (-s, s, s, -s), (s, -s, -s, s), (-s, s, -s, s)]  # (left, right, top, bottom)
        return torch.cat([x, *(F.pad(x, pad) for pad in pads)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_img_size(self, x)
        patches = rearrange(
            self.shifted(x), "b c (gh p1) (gw p2) -> b (gh gw) (p1 p2 c)", p1=self.patch_size, p2=self.patch_size
        )
        return self.proj(self.norm(patches))


def default_lsa() -> str | type[nn.Module]:
    """The registered ``lsa`` attention when there is one (a plugin may replace it), else the built-in class."""
    return "lsa" if "lsa" in ATTENTION else LocalitySelfAttention


class SmallDataViT(VisionTransformer):
    """ViT for small datasets: shifted patch tokenization and locality self-attention (LSA).

    ``attention`` defaults to LSA (the registry's ``lsa``, else a built-in one); any registered
    attention can replace it.
    """

    def __init__(
        self,
        *,
        img_size: int = 32,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 10,
        embed_dim: int = 192,
        depth: int = 9,
        num_heads: int = 12,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        class_token: bool = True,
        global_pool: Literal["token", "avg"] = "token",
        pos_embed: Literal["learn", "sincos", "none"] = "learn",
        attention: str | dict[str, Any] | None = None,
        fc_norm: bool | None = None,
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
            class_token=class_token,
            global_pool=global_pool,
            pos_embed=pos_embed,
            attention=attention or default_lsa(),
            fc_norm=fc_norm,
            patch_drop_rate=patch_drop_rate,
        )
        self.patch_embed = ShiftedPatchTokenizer(img_size, patch_size, in_chans, embed_dim)
        nn.init.trunc_normal_(self.patch_embed.proj.weight, std=0.02)
        nn.init.zeros_(self.patch_embed.proj.bias)


register_config(
    SmallDataViT,
    "vit_sd_tiny_patch4_32",
    "Small-data ViT for 32 px images (CIFAR): SPT + LSA, 9 layers, 192 dim, 12 heads.",
)
register_config(
    SmallDataViT,
    "vit_sd_nano_patch4_16",
    "A 4-layer, 64-dim small-data ViT (SPT + LSA) for 16 px images (digits).",
    img_size=16,
    in_chans=1,
    embed_dim=64,
    depth=4,
    num_heads=4,
    drop_path_rate=0.0,
    class_token=False,
    global_pool="avg",
    fc_norm=False,
    pos_embed="sincos",
)
