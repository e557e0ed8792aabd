"""Registered models: the VisionTransformer and its named configurations."""

from vitkit.models.factory import create_model, list_models
from vitkit.models.vit import VisionTransformer

__all__ = ["VisionTransformer", "create_model", "list_models"]
