"""Evaluation: loss, top-1/top-5 accuracy and predictions over a loader."""

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
    predictions: torch.Tensor  # (N,) predicted class
    targets: torch.Tensor  # (N,)
    probabilities: torch.Tensor  # (N, classes), softmax of the logits
    logits: torch.Tensor | None = None  # (N, classes) on the CPU: what calibration fits its temperature on

    def with_temperature(self, temperature: float) -> Evaluation:
        """This evaluation with probabilities ``softmax(logits / temperature)`` (predictions, so accuracy,
        unchanged): what ``predict`` reports for these images."""
        import dataclasses

        from vitkit.engine.calibration import calibrated

        if self.logits is None or temperature == 1.0:
            return self
        return dataclasses.replace(self, probabilities=calibrated(self.logits, temperature))

    def as_dict(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_loss": self.loss, f"{prefix}_acc": self.acc, f"{prefix}_top5": self.top5}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, device: torch.device, precision: str = "fp32") -> Evaluation:
    """Run ``model`` over ``loader`` in eval mode; mean cross-entropy and accuracies."""
    was_training = model.training
    model.eval()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    logits_all, targets_all = [], []
    for images, targets in loader:
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        total_loss += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        logits_all.append(logits)
        targets_all.append(targets)
    model.train(was_training)
    logits = torch.cat(logits_all)
    targets = torch.cat(targets_all)
    count = len(targets)
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
