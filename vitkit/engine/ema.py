"""Exponential moving average of a model's weights (Polyak averaging), updated after each optimizer step."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * live`` for parameters; buffers are copied.

    The first updates use ``min(decay, (1 + n) / (10 + n))`` (as in TensorFlow's
    ExponentialMovingAverage), so an early EMA is not dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.module.parameters())
        live_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, live_params, 1.0 - decay)
        for ema_buf, live_buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(live_buf)

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
