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


def _as_multi_hot(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Targets as float rows like ``logits``: class indices become (smoothed) one-hot rows; multi-hot or
    soft rows are kept."""
    if targets.ndim == logits.ndim:
        return targets.float()
    off = label_smoothing / logits.shape[-1]
    return torch.full_like(logits, off, dtype=torch.float32).scatter_(-1, targets[:, None], 1.0 - label_smoothing + off)


class BinaryCrossEntropy(nn.Module):
    """Per-class sigmoid BCE against (smoothed) one-hot, multi-hot (multi-label) or soft targets, as in
    timm and DeiT III."""

    multi_label = True  # trains multi-label data too (``vitkit.data.multilabel``)

    def __init__(self, label_smoothing: float = 0.0, target_threshold: float | None = None) -> None:
        super().__init__()
        _check_smoothing(label_smoothing)
        self.label_smoothing, self.target_threshold = label_smoothing, target_threshold

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = _as_multi_hot(logits, targets, self.label_smoothing)
        if self.target_threshold is not None:
            targets = (targets > self.target_threshold).float()
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


@register_loss("binary_cross_entropy")
def binary_cross_entropy(label_smoothing: float = 0.0, target_threshold: float | None = None) -> nn.Module:
    """Sigmoid binary cross-entropy on one-hot (or mixed) targets; ``target_threshold`` binarises them."""
    return BinaryCrossEntropy(label_smoothing, target_threshold)


@register_loss("bce")
def bce(label_smoothing: float = 0.0, target_threshold: float | None = None) -> nn.Module:
    """Sigmoid binary cross-entropy per class (``binary_cross_entropy``): the loss for multi-label data."""
    return BinaryCrossEntropy(label_smoothing, target_threshold)


class AsymmetricLoss(nn.Module):
    """Asymmetric loss (Ridnik et al., ICCV 2021) for multi-label data: focal weights ``(1 - p)^gamma_pos``
    on positives and ``p_m^gamma_neg`` on negatives, whose probability is shifted down by ``clip``
    (``p_m = max(p - clip, 0)``), so the many easy negatives weigh little. Summed over classes, mean
    over images."""

    multi_label = True

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> None:
        super().__init__()
        if gamma_neg < 0 or gamma_pos < 0 or not 0.0 <= clip < 1.0:
            raise ValueError(f"need gamma_neg, gamma_pos >= 0 and clip in [0, 1), got {gamma_neg}, {gamma_pos}, {clip}")
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = _as_multi_hot(logits, targets)
        p = torch.sigmoid(logits.float())
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p) ** self.gamma_pos
        neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg**self.gamma_neg
        return -(pos + neg).sum(dim=-1).mean()


@register_loss("asl")
def asl(gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05) -> nn.Module:
    """Asymmetric loss for multi-label data (``AsymmetricLoss``; the paper's defaults)."""
    return AsymmetricLoss(gamma_neg, gamma_pos, clip)
