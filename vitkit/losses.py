"""Registered losses: ``(logits, targets) -> scalar``; targets are class indices or probabilities."""

from __future__ import annotations

from torch import nn

from vitkit.registry import register_loss


@register_loss("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy with optional label smoothing; accepts hard labels or soft (mixed) targets."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
