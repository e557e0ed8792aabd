"""Datasets (registered), augmentations (registered) and the loaders that feed the trainer."""

from vitkit.data.datasets import DataSplits, ImageSet
from vitkit.data.loaders import BatchTransform, build_loader

__all__ = ["BatchTransform", "DataSplits", "ImageSet", "build_loader"]
