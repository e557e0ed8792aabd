"""Test-time augmentation: average the calibrated class probabilities over a few views of each image.

The views are made from the batch the evaluation transform (``vitkit.data.loaders.eval_transform``)
takes, by that transform, so the first view is exactly the evaluation view:

- ``flip``: the evaluation view and its horizontal mirror (2 views);
- ``crops``: the evaluation view (the centre crop) and the four ``img_size`` corner crops of the image
  it is cropped from (5 views): the stored base image of imagefolder runs (side ``img_size / crop_pct``);
  other runs' images are first resized to ``img_size / CROPS_PCT`` to give them that margin.

``vitkit eval RUN --tta MODE`` and ``vitkit predict --tta MODE`` (``Predictor(tta=...)``) use it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.errors import UserError

TTA_MODES = ("flip", "crops")
CROPS_PCT = 0.875  # the margin "crops" gives images that have none (timm's default crop_pct)


def check_tta(mode: str | None) -> str | None:
    """``mode`` if it is one of ``TTA_MODES`` (``None``: no test-time augmentation)."""
    if mode is None or mode in TTA_MODES:
        return mode
    raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}, got {mode!r}")


class TTAViews:
    """An evaluation transform's batch and its test-time views: ``(K, B, C, S, S)``, view 0 the eval view."""

    def __init__(self, transform: Any, mode: str) -> None:
        self.transform, self.mode = transform, check_tta(mode)

    def __call__(
        self, images: torch.Tensor, targets: torch.Tensor, train: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        centre, _ = self.transform(images, targets)
        if self.mode == "flip":
            return torch.stack([centre, centre.flip(-1)]), targets
        size = self.transform.img_size
        base = images
        if self.transform.crop is None:  # resized to img_size, no margin: give it one
            base = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
            side = round(size / CROPS_PCT)
            base = F.interpolate(base, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        corners = [
            base[..., :size, :size],
            base[..., :size, -size:],
            base[..., -size:, :size],
            base[..., -size:, -size:],
        ]
        return torch.stack([centre, *(self.transform(c, targets)[0] for c in corners)]), targets

    def set_epoch(self, epoch: int) -> None:
        """Evaluation transforms have no epoch-dependent augmentations."""


def mean_probabilities(
    model: nn.Module, inputs: torch.Tensor, temperature: float = 1.0, multi_label: bool = False
) -> torch.Tensor:
    """``softmax(model(x) / temperature)`` of a ``(B, C, S, S)`` batch, or its mean over the views of a
    ``(K, B, C, S, S)`` one (``TTAViews``); ``multi_label``: each class's own sigmoid instead."""
    from vitkit.evaluation.calibration import calibrated

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return model(x).float().sigmoid() if multi_label else calibrated(model(x), temperature)

    if inputs.ndim == 4:
        return probabilities(inputs)
    return torch.stack([probabilities(views) for views in inputs]).mean(dim=0)


class TTAModel(nn.Module):
    """``log`` of the calibrated probabilities averaged over ``TTAViews``'s views: logits whose softmax is
    that mean, so ``evaluation.evaluate.evaluate`` scores test-time augmentation unchanged."""

    def __init__(self, model: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        probabilities = mean_probabilities(self.model, inputs, self.temperature)
        return probabilities.clamp(min=torch.finfo(probabilities.dtype).tiny).log()
