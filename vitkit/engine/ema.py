"""Exponential moving average of a model's weights (Polyak averaging), updated after each optimizer step.

The averaging is timm's ``ModelEmaV3`` (parameters lerped with one ``_foreach_lerp_``, buffers copied);
vitkit keeps its warm-up of the decay and its checkpoint format (``model``, ``updates``, ``decay``).
"""

from __future__ import annotations

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * live`` for parameters; buffers are copied.

    The first updates use ``min(decay, (1 + n) / (10 + n))`` (as in TensorFlow's
    ExponentialMovingAverage), so an early EMA is not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        from timm.utils import ModelEmaV3

        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.ema = ModelEmaV3(model, decay=decay, exclude_buffers=True)
        self.module = self.ema.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        self.ema.apply_update_no_buffers_(model, min(self.decay, (1 + self.updates) / (10 + self.updates)))

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
