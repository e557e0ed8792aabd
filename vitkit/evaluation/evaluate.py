"""Evaluation: loss, top-1/top-5 accuracy and predictions over a loader.

Multi-label data (multi-hot targets): the loss is the per-class sigmoid BCE, ``acc`` the exact match
(every label right at threshold 0.5), ``top5`` the share of images whose top-scored label is one of
theirs; ``predictions`` are the 0/1 rows at 0.5 and ``probabilities`` the sigmoids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vitkit.engine.device import autocast


@dataclass
class Evaluation:
    loss: float
    acc: float
    top5: float
    count: int
    predictions: torch.Tensor  # (N,) predicted class; multi-label: (N, classes) 0/1
    targets: torch.Tensor  # (N,); multi-label: (N, classes) multi-hot
    probabilities: torch.Tensor  # (N, classes): softmax; multi-label: sigmoid
    logits: torch.Tensor | None = None  # (N, classes) on the CPU: what calibration fits its temperature on

    @property
    def multi_label(self) -> bool:
        return self.targets.ndim == 2

    def with_temperature(self, temperature: float) -> Evaluation:
        """This evaluation with probabilities ``softmax(logits / temperature)`` (predictions, so accuracy,
        unchanged): what ``predict`` reports for these images. Multi-label: unchanged (per-class thresholds
        are its calibration)."""
        import dataclasses

        from vitkit.evaluation.calibration import calibrated

        if self.logits is None or temperature == 1.0 or self.multi_label:
            return self
        return dataclasses.replace(self, probabilities=calibrated(self.logits, temperature))

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_loss": self.loss, f"{prefix}_acc": self.acc, f"{prefix}_top5": self.top5}


def empty_evaluation(num_classes: int, multi_label: bool = False) -> Evaluation:
    """The evaluation of no images (a rank whose shard of a split smaller than the world is empty), with
    the dtypes and row shapes the other ranks' evaluations have, so the reductions and gathers match."""
    probabilities = torch.zeros((0, num_classes))
    if multi_label:
        return Evaluation(0.0, 0.0, 0.0, 0, probabilities.long(), probabilities.clone(), probabilities)
    empty = torch.zeros(0, dtype=torch.long)
    return Evaluation(0.0, 0.0, 0.0, 0, empty, empty.clone(), probabilities, probabilities.clone())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    precision: str = "fp32",
    num_classes: int | None = None,
    multi_label: bool = False,
) -> Evaluation:
    """Run ``model`` over ``loader`` in eval mode; mean cross-entropy and accuracies. A loader with no
    images gives ``empty_evaluation`` (``num_classes``, else the model's, and ``multi_label`` shape it)."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    logits_all, targets_all = [], []
    for images, targets in loader:
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        if targets.ndim == 2:  # multi-label
            bce = nn.functional.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
            total_loss += bce.mean(dim=1).sum().double()
        else:
            total_loss += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        logits_all.append(logits)
        targets_all.append(targets)
    model.train(was_training)
    if not logits_all:
        return empty_evaluation(num_classes or getattr(model, "num_classes", 0), multi_label)
    logits = torch.cat(logits_all)
    targets = torch.cat(targets_all)
    count = len(targets)
    if targets.ndim == 2:
        return _multi_label(logits, targets, float(total_loss) / max(count, 1))
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    correct1 = (top[:, 0] == targets).sum()
    correct5 = (top == targets[:, None]).any(dim=1).sum()
    return Evaluation(
        loss=float(total_loss) / max(count, 1),
        acc=float(correct1) / max(count, 1),
        top5=float(correct5) / max(count, 1),
        count=count,
        predictions=top[:, 0].cpu(),
        targets=targets.cpu(),
        probabilities=logits.softmax(dim=1).cpu(),
        logits=logits.cpu(),
    )


def _multi_label(logits: torch.Tensor, targets: torch.Tensor, loss: float) -> Evaluation:
    """The ``Evaluation`` of multi-label logits against multi-hot targets (see the module's doc)."""
    count = len(targets)
    probs = logits.sigmoid()
    predicted = (probs > 0.5).long()
    exact = (predicted == targets.long()).all(dim=1).sum()
    top_hit = targets.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1).gt(0).sum()
    return Evaluation(
        loss=loss,
        acc=float(exact) / max(count, 1),
        top5=float(top_hit) / max(count, 1),
        count=count,
        predictions=predicted.cpu(),
        targets=targets.cpu(),
        probabilities=probs.cpu(),
    )
