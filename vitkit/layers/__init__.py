"""einops-written ViT building blocks: patches, positions, attention, MLP, blocks."""

from vitkit.layers.attention import SoftmaxAttention
from vitkit.layers.block import Block
from vitkit.layers.drop import DropPath
from vitkit.layers.mlp import Mlp
from vitkit.layers.patch_embed import PatchEmbed
from vitkit.layers.pos_embed import sincos_2d

__all__ = ["Block", "DropPath", "Mlp", "PatchEmbed", "SoftmaxAttention", "sincos_2d"]
