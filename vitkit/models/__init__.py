"""Registered models: the VisionTransformer, its variants and their named configurations; the timm bridge."""

from vitkit.models import cait, cct, deit, simple_vit, small_data  # noqa: F401 (register their configs)
from vitkit.models.cait import CaiT
from vitkit.models.cct import CompactTransformer
from vitkit.models.deit import DistilledVisionTransformer
from vitkit.models.factory import list_models
from vitkit.models.simple_vit import SimpleViT
from vitkit.models.small_data import SmallDataViT
from vitkit.models.timm_bridge import create_model, load_weights, timm_config, to_timm_model, to_timm_state_dict
from vitkit.models.vit import VisionTransformer

__all__ = [
    "CaiT",
    "CompactTransformer",
    "DistilledVisionTransformer",
    "SimpleViT",
    "SmallDataViT",
    "VisionTransformer",
    "create_model",
    "list_models",
    "load_weights",
    "timm_config",
    "to_timm_model",
    "to_timm_state_dict",
]
