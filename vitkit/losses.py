"""Registered losses: ``(logits, targets) -> scalar``; targets are class indices or probabilities.

Soft targets (from mixup/cutmix) already carry the label smoothing the recipe asked for, so the
losses smooth hard targets only. Distillation lives in ``vitkit.distill``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.registry import register_loss


def _check_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")


class CrossEntropy(nn.Module):
    """Cross-entropy; hard targets are smoothed by ``label_smoothing``, soft targets used as given."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing
        self.class_weight: torch.Tensor | None = None  # data.balance = "loss": per-class weights

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.class_weight.to(logits.device) if self.class_weight is not None else None
        if targets.ndim == logits.ndim:  # probabilities
            log_p = F.log_softmax(logits.float(), dim=-1)
            if weight is not None:
                log_p = log_p * weight
            return torch.sum(-targets * log_p, dim=-1).mean()
        return F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.label_smoothing)


@register_loss("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy with optional label smoothing; accepts hard labels or soft (mixed) targets."""
    return CrossEntropy(label_smoothing)


@register_loss("soft_target_cross_entropy")
def soft_target_cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy against target probabilities (mixup/cutmix); hard labels become smoothed one-hot."""
    return CrossEntropy(label_smoothing)


class BinaryCrossEntropy(nn.Module):
    """Per-class sigmoid BCE against (smoothed) one-hot or soft targets, as in timm and DeiT III."""

    def __init__(self, label_smoothing: float = 0.0, target_threshold: float | None = None) -> None:
        super().__init__()
        _check_smoothing(label_smoothing)
        self.label_smoothing, self.target_threshold = label_smoothing, target_threshold

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim != logits.ndim:
            classes = logits.shape[-1]
            off = self.label_smoothing / classes
            targets = torch.full_like(logits, off, dtype=torch.float32).scatter_(
                -1, targets[:, None], 1.0 - self.label_smoothing + off
            )
        if self.target_threshold is not None:
            targets = (targets > self.target_threshold).float()
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


@register_loss("binary_cross_entropy")
def binary_cross_entropy(label_smoothing: float = 0.0, target_threshold: float | None = None) -> nn.Module:
    """Sigmoid binary cross-entropy on one-hot (or mixed) targets; ``target_threshold`` binarises them."""
    return BinaryCrossEntropy(label_smoothing, target_threshold)
