"""Knowledge distillation from a frozen teacher (Hinton et al. 2015; DeiT, Touvron et al. 2021).

The student's output is its logits, or ``(class_logits, dist_logits)`` for a model with a
distillation token (DeiT): the label loss is taken on the class head and the distillation loss
on the distillation head. A plain model distils through its one head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.errors import UserError
from vitkit.registry import LOSSES, register_loss


def load_teacher(spec: str, num_classes: int, in_chans: int, img_size: int) -> tuple[nn.Module, int]:
    """``(teacher, its input size)`` from a vitkit run directory / checkpoint / safetensors file, or
    ``timm/<name>`` (random init: no weights are downloaded)."""
    if spec.startswith("timm/"):
        import timm

        name = spec.removeprefix("timm/")
        if not timm.is_model(name):
            raise UserError(f"loss.teacher: timm has no model {name!r}")
        try:
            return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size), img_size
        except TypeError:  # a model without img_size (CNNs)
            return timm.create_model(name, num_classes=num_classes, in_chans=in_chans), img_size
    from vitkit.models import create_model
    from vitkit.runs.checkpoint import load_checkpoint, load_safetensors

    path = Path(spec)
    if path.is_dir():
        path = path / "checkpoints" / "best.pt"
    if not path.exists():
        raise UserError(f"loss.teacher: {spec!r} is neither a run directory, a checkpoint nor 'timm/<name>'")
    if path.suffix == ".safetensors":
        state, meta = load_safetensors(path)
        model_spec, data = meta.get("model"), meta.get("data", {})
    else:
        checkpoint = load_checkpoint(path)
        state, model_spec, data = checkpoint["model"], checkpoint["recipe"]["model"], checkpoint.get("data", {})
    if not model_spec:
        raise UserError(f"loss.teacher: {path} does not say which model it holds")
    if len(data.get("classes", [])) not in (0, num_classes):
        raise UserError(f"loss.teacher: {path} has {len(data['classes'])} classes, this dataset {num_classes}")
    kwargs = {k: v for k, v in model_spec.items() if k != "name"}
    kwargs.update(num_classes=num_classes, in_chans=data.get("in_chans", in_chans))
    teacher = create_model(model_spec["name"], **kwargs)
    teacher.load_state_dict(state)
    return teacher, int(data.get("img_size", kwargs.get("img_size", img_size)))


class Distillation(nn.Module):
    """``(1 - alpha) * base(class head, labels) + alpha * distill(dist head, teacher)``; soft or hard."""

    needs_images = True

    def __init__(
        self, base: nn.Module, teacher: nn.Module, teacher_size: int, kind: str, alpha: float, tau: float
    ) -> None:
        super().__init__()
        self.base, self.kind, self.alpha, self.tau, self.teacher_size = base, kind, alpha, tau, teacher_size
        self.teacher = teacher.eval().requires_grad_(False)

    def prepare_student(self, model: nn.Module) -> None:
        """Ask a model with a distillation token (DeiT) for both heads' logits in training."""
        if hasattr(model, "distilled_training"):
            model.distilled_training = True

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.eval()  # the teacher never trains (dropout, drop path off)
        return self

    def forward(self, outputs: Any, targets: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        logits, dist = outputs if isinstance(outputs, (tuple, list)) else (outputs, outputs)
        with torch.no_grad():
            if images.shape[-1] != self.teacher_size:
                images = F.interpolate(images, size=(self.teacher_size, self.teacher_size), mode="bilinear")
            teacher = self.teacher(images).float()
        if self.kind == "soft":
            t = self.tau
            distill = F.kl_div(
                F.log_softmax(dist.float() / t, dim=-1),
                F.log_softmax(teacher / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
        else:
            distill = F.cross_entropy(dist.float(), teacher.argmax(dim=-1))
        return (1 - self.alpha) * self.base(logits, targets) + self.alpha * distill


@register_loss("distillation")
def distillation(
    teacher: str,
    num_classes: int,
    in_chans: int,
    img_size: int,
    kind: str = "soft",
    alpha: float = 0.5,
    tau: float = 1.0,
    base: str | dict = "cross_entropy",
    label_smoothing: float = 0.0,
) -> nn.Module:
    """Distil from ``teacher`` (run dir, checkpoint, or ``timm/<name>``): soft (KL at ``tau``) or hard (DeiT)."""
    if kind not in ("soft", "hard"):
        raise ValueError(f"kind must be 'soft' or 'hard', got {kind!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if isinstance(base, str):
        base = {"name": base}
    base_loss = LOSSES.create({**base, "label_smoothing": base.get("label_smoothing", label_smoothing)})
    model, size = load_teacher(teacher, num_classes, in_chans, img_size)
    return Distillation(base_loss, model, size, kind, alpha, tau)
