"""Attention variants, registered by name. Each maps ``(B, N, dim) -> (B, N, dim)``.

Every built-in subclasses ``Attention`` (see ``vitkit.layers.attention.base``), which owns the
qkv projection, head split/merge, q/k norm, dropouts and output projection; a variant overrides
``scores(q, k)`` (weights, ``attention_map`` for free) or ``attend(q, k, v)`` (fused kernels).
The contract every variant (and every plugin attention, base class or not) follows::

    __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, **kwargs)
    forward(x)            # (B, N, dim) -> (B, N, dim)
    attention_map(x)      # optional: (B, heads, N, N) weights, for visualisation

Importing this package registers all built-in variants.
"""

from vitkit.layers.attention.base import Attention
from vitkit.layers.attention.cosine import CosineAttention
from vitkit.layers.attention.linear import LinearAttention
from vitkit.layers.attention.lsa import LocalitySelfAttention
from vitkit.layers.attention.softmax import SoftmaxAttention
from vitkit.layers.attention.talking_heads import TalkingHeadsAttention

__all__ = [
    "Attention",
    "CosineAttention",
    "LinearAttention",
    "LocalitySelfAttention",
    "SoftmaxAttention",
    "TalkingHeadsAttention",
]
