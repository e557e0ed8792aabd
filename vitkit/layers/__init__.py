"""einops-written ViT building blocks: patches, positions, attention, MLP, blocks."""

from vitkit.layers.attention import SoftmaxAttention
from vitkit.layers.block import Block, BlockStack, GradCheckpointing, build_attention
from vitkit.layers.drop import DropPath, PatchDropout
from vitkit.layers.layer_scale import LayerScale
from vitkit.layers.mlp import Mlp
from vitkit.layers.patch_embed import PatchEmbed
from vitkit.layers.pos_embed import sincos_2d

__all__ = [
    "Block",
    "BlockStack",
    "DropPath",
    "GradCheckpointing",
    "LayerScale",
    "Mlp",
    "PatchDropout",
    "PatchEmbed",
    "SoftmaxAttention",
    "build_attention",
    "sincos_2d",
]
