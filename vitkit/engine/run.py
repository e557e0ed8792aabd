"""The ``Run`` handed to plugin hooks: what a run is made of, and a way to stop it early."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.recipe import Recipe


@dataclass
class Run:
    """One training run: its recipe, model, run directory, device and history so far."""

    recipe: Recipe
    model: nn.Module
    run_dir: Path
    device: torch.device
    classes: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None

    def request_stop(self, reason: str) -> None:
        """Ask the trainer to stop after the current epoch."""
        self.stop_reason = self.stop_reason or reason

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None
