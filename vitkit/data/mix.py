"""Mixup and CutMix (timm's ``Mixup``), batched on the device; they turn targets into probabilities.

Label smoothing is folded into the mixed targets (the recipe's ``loss.label_smoothing``), so the
loss must not smooth soft targets again (vitkit's losses do not). ``off_epoch`` switches mixing off
from that epoch on (targets stay soft, smoothed one-hot), as DeiT-style recipes do for the last epochs.
"""

from __future__ import annotations

import torch

from vitkit.errors import UserError
from vitkit.registry import register_augmentation


@register_augmentation("mixup_cutmix")
class MixupCutmix:
    """Mixup (``mixup_alpha``) and/or CutMix (``cutmix_alpha``) on whole batches, on the device."""

    def __init__(
        self,
        num_classes: int,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        off_epoch: int = 0,
    ) -> None:
        from timm.data import Mixup

        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha + cutmix_alpha == 0:
            raise ValueError("mixup_alpha and cutmix_alpha must be >= 0, and one of them > 0")
        for key, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        if mode not in ("batch", "pair", "elem"):
            raise ValueError(f"mode must be 'batch', 'pair' or 'elem', got {mode!r}")
        if off_epoch < 0:
            raise ValueError(f"off_epoch must be >= 0 (0: never), got {off_epoch}")
        self.off_epoch = off_epoch
        self.mixup = Mixup(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def set_epoch(self, epoch: int) -> None:
        """Mix up to epoch ``off_epoch - 1``; from ``off_epoch`` on only smooth the one-hot targets."""
        self.mixup.mixup_enabled = self.off_epoch == 0 or epoch < self.off_epoch

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) % 2:
            raise UserError(f"mixup/cutmix need an even batch size, got a batch of {len(images)} (data.batch_size)")
        images, targets = self.mixup(images.contiguous(), targets)
        return images, targets.to(images.dtype)


@register_augmentation("mixup")
def mixup(
    num_classes: int, label_smoothing: float = 0.0, alpha: float = 0.8, prob: float = 1.0, off_epoch: int = 0
) -> MixupCutmix:
    """Mixup only (Zhang et al. 2018): blend image pairs with a Beta(``alpha``, ``alpha``) weight."""
    return MixupCutmix(num_classes, label_smoothing, alpha, 0.0, prob, 0.0, "batch", off_epoch)


@register_augmentation("cutmix")
def cutmix(
    num_classes: int, label_smoothing: float = 0.0, alpha: float = 1.0, prob: float = 1.0, off_epoch: int = 0
) -> MixupCutmix:
    """CutMix only (Yun et al. 2019): paste a box from the paired image, mix labels by its area."""
    return MixupCutmix(num_classes, label_smoothing, 0.0, alpha, prob, 1.0, "batch", off_epoch)
