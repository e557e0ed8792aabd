"""Registered optimizers and learning-rate schedulers (schedulers step once per optimizer update)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vitkit.registry import register_optimizer, register_scheduler


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases, norms, tokens and position embeddings without decay."""
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in skip or name.split(".")[-1] in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused_kwargs(params: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Fused kernels (one per tensor) for float parameters on CPU or CUDA, else the multi-tensor path.

    On CPU the fused AdamW step is 4-5x faster than ``foreach`` (see docs/benchmarks.md).
    """
    tensors = [p for group in params for p in group["params"]]
    devices = {p.device.type for p in tensors}
    fused = len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in tensors)
    return {"fused": True} if fused else {"foreach": True}


@register_optimizer("adamw")
def adamw(
    params: list[dict[str, Any]],
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), with fused kernels on CPU and CUDA."""
    return torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, **_fused_kwargs(params)
    )


@register_optimizer("sgd")
def sgd(
    params: list[dict[str, Any]],
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum."""
    return torch.optim.SGD(
        params,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
        **_fused_kwargs(params),
    )


def _with_warmup(
    shape: Callable[[float], float], warmup_steps: int, total_steps: int, warmup_start: float = 0.0
) -> Callable[[int], float]:
    """LR multiplier per update: linear warm-up over ``warmup_steps``, then ``shape(progress)``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start + (1.0 - warmup_start) * (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return shape(min(1.0, (step - warmup_steps) / span))

    return factor


def _warmup_steps(steps_per_epoch: int, warmup_epochs: float, warmup_steps: int | None) -> int:
    if warmup_steps is not None:
        return int(warmup_steps)
    return int(round(warmup_epochs * steps_per_epoch))


@register_scheduler("cosine")
def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` x the base LR."""
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)

    def shape(t: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, _with_warmup(shape, warm, total_steps))


@register_scheduler("constant")
def constant(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int | None = None,
) -> LambdaLR:
    """Linear warm-up, then the base LR throughout."""
    warm = _warmup_steps(steps_per_epoch, warmup_epochs, warmup_steps)
    return LambdaLR(optimizer, _with_warmup(lambda t: 1.0, warm, total_steps))
