"""The Vision Transformer (Dosovitskiy et al. 2021), with timm's constructor names and weight keys."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from einops import repeat
from torch import nn

from vitkit.layers import Block, BlockStack, GradCheckpointing, PatchDropout, PatchEmbed
from vitkit.registry import POS_EMBED, split_spec


class VisionTransformer(GradCheckpointing, nn.Module):
    """ViT: patch embedding, position embedding, pre-norm blocks, pooled head.

    Keyword names follow timm's ``VisionTransformer``; ``attention`` picks the attention variant
    by registry name, ``pos_embed`` the position encoding (``learn``, ``sincos``, ``none``,
    ``rope2d``: ``vitkit list pos_embed``), ``mlp`` the feed-forward network (``mlp``, ``swiglu``);
    ``patch_norm`` adds a LayerNorm on patch tokens (off: on tiny patches it erases the intensity
    signal). Options as in timm: ``init_values`` (LayerScale), ``qk_norm``,
    ``reg_tokens`` (register tokens, Darcet et al. 2024), ``no_embed_class`` (learned positions for
    patches only), ``fc_norm`` (LayerNorm after pooling instead of before; unset: on with
    ``global_pool="avg"``, as timm's ``fc_norm=None``), ``pre_norm`` (LayerNorm before the blocks),
    ``patch_drop_rate`` (in training, drop that share of the patch tokens, after positions are added).
    ``set_grad_checkpointing()`` recomputes block activations in backward, as in timm;
    ``set_dynamic_img_size()`` takes square images of other sizes (timm's ``dynamic_img_size``).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        class_token: bool = True,
        global_pool: Literal["token", "avg"] = "token",
        pos_embed: str | dict[str, Any] = "learn",
        patch_norm: bool = False,
        attention: str | dict[str, Any] = "softmax",
        init_values: float | None = None,
        qk_norm: bool = False,
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        fc_norm: bool | None = None,
        pre_norm: bool = False,
        mlp: str | dict[str, Any] = "mlp",
        patch_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        for key, value in {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
        }.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' needs class_token=True (or use global_pool='avg')")
        if not isinstance(reg_tokens, int) or reg_tokens < 0:
            raise ValueError(f"reg_tokens must be an integer >= 0, got {reg_tokens!r}")
        if init_values is not None and init_values <= 0:
            raise ValueError(f"init_values (LayerScale) must be > 0 or unset, got {init_values}")
        for key, p in {
            "drop_rate": drop_rate,
            "attn_drop_rate": attn_drop_rate,
            "drop_path_rate": drop_path_rate,
            "patch_drop_rate": patch_drop_rate,
        }.items():
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {p}")

        if fc_norm is None:  # timm's rule: the norm follows average pooling
            fc_norm = global_pool == "avg"
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        position = POS_EMBED.create(pos_embed)
        self.position = position  # recomputes a fixed table for another patch grid (dynamic_img_size)
        self.dynamic_img_size = False
        self.global_pool, self.pos_embed_kind, self.mlp_kind = global_pool, split_spec(pos_embed)[0], split_spec(mlp)[0]
        self.depth, self.num_heads, self.mlp_ratio, self.qkv_bias = depth, num_heads, mlp_ratio, qkv_bias
        self.init_values, self.qk_norm, self.pre_norm = init_values, qk_norm, pre_norm
        self.no_embed_class, self.use_fc_norm = no_embed_class, fc_norm
        self.num_reg_tokens = reg_tokens

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, norm=patch_norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.init_extra_tokens(embed_dim)
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.num_prefix_tokens = sum(t.shape[1] for t in self.prefix_parameters())
        # a table covers the prefix tokens too (as in timm) unless no_embed_class or the encoding says not
        self.pos_patches_only = no_embed_class or position.patches_only
        embedded = 0 if self.pos_patches_only else self.num_prefix_tokens
        table = position.table(self.patch_embed.grid_size, embed_dim, embedded)
        if table is None or isinstance(table, nn.Parameter):
            self.pos_embed = table
        else:  # fixed
            self.register_buffer("pos_embed", table, persistent=False)
        head_dim = embed_dim // num_heads
        rope = position.rotary(head_dim, self.patch_embed.grid_size, self.num_prefix_tokens)
        self.pos_drop = nn.Dropout(drop_rate)
        self.patch_drop = PatchDropout(patch_drop_rate, self.num_prefix_tokens)
        self.norm_pre = nn.LayerNorm(embed_dim, eps=1e-6) if pre_norm else nn.Identity()

        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = BlockStack(
            *[
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    rate,
                    attention,
                    init_values=init_values,
                    qk_norm=qk_norm,
                    mlp=mlp,
                    rope=rope,
                )
                for rate in rates
            ]
        )
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(embed_dim, eps=1e-6)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.init_extra_heads(embed_dim, num_classes)
        self.init_weights()

    # subclasses (DeiT) add prefix tokens and heads through these two hooks
    def init_extra_tokens(self, embed_dim: int) -> None:
        """Create prefix tokens that sit between the class token and the register tokens."""

    def init_extra_heads(self, embed_dim: int, num_classes: int) -> None:
        """Create classifier heads besides ``head``."""

    def prefix_parameters(self) -> list[nn.Parameter]:
        """The learned tokens put before the patch tokens, in order: class, (distillation), registers."""
        return [t for t in (self.cls_token, getattr(self, "dist_token", None), self.reg_token) if t is not None]

    def init_weights(self) -> None:
        """Truncated-normal(0.02) for linear layers and tokens, zero biases, unit norms."""
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in self.prefix_parameters():
            nn.init.normal_(token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.patch_embed.proj  # as a linear layer over flattened patches
        nn.init.trunc_normal_(proj.weight, std=math.sqrt(1.0 / proj.weight[0].numel()))
        nn.init.zeros_(proj.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that weight decay should skip (tokens, positions)."""
        return {"cls_token", "dist_token", "reg_token", "pos_embed"}

    def set_dynamic_img_size(self, enable: bool = True) -> None:
        """Take square images whose side is any multiple of the patch size (progressive resizing): learned
        positions are resampled to the images' patch grid in each forward (bicubic, timm's
        ``resample_abs_pos_embed``; the parameter keeps ``img_size``'s grid), fixed and rotary ones recomputed."""
        self.dynamic_img_size = enable
        self.patch_embed.strict_img_size = not enable

    def position_table(self, grid_size: int) -> torch.Tensor | None:
        """The additive position table for a ``grid_size`` patch grid (the model's own at its ``img_size``)."""
        if self.pos_embed is None or grid_size == self.patch_embed.grid_size:
            return self.pos_embed
        embedded = 0 if self.pos_patches_only else self.num_prefix_tokens
        if isinstance(self.pos_embed, nn.Parameter):
            from vitkit.models.weights import resample_pos_embed

            return resample_pos_embed(self.pos_embed, grid_size, embedded)
        return self.position.table(grid_size, self.embed_dim, embedded).to(self.pos_embed)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> normed tokens ``(B, prefix + patches, dim)``."""
        grid = x.shape[-1] // self.patch_embed.patch_size
        x = self.patch_embed(x)
        pos_embed = self.position_table(grid)
        if pos_embed is not None and self.pos_patches_only:
            x = x + pos_embed.to(x.dtype)
        prefix = [repeat(t, "1 n d -> b n d", b=x.shape[0]) for t in self.prefix_parameters()]
        x = torch.cat([*prefix, x], dim=1)
        if pos_embed is not None and not self.pos_patches_only:
            x = x + pos_embed
        x, kept = self.patch_drop(x)  # after the positions: the kept tokens carry theirs
        rope = getattr(self.blocks[0].attn, "rope", None) if len(self.blocks) else None
        if rope is not None:
            rope.kept, rope.grid = kept, grid
        return self.norm(self.blocks(self.norm_pre(self.pos_drop(x))))

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, dim) -> (B, dim)``: the class token, or the mean of the patch tokens."""
        return x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool tokens (class token or mean of patch tokens) and classify."""
        x = self.head_drop(self.fc_norm(self.pool(x)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
