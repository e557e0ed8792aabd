"""Registered optimizers and the parameter groups they get (no decay on biases/norms/tokens; layer-wise LR decay).

Schedulers live in ``vitkit.schedulers``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from vitkit.registry import register_optimizer

EMBEDDING_NAMES = ("patch_embed", "cls_token", "dist_token", "reg_token", "pos_embed")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: embeddings 0, ``blocks.i`` i + 1, the rest (head) last."""
    match = re.match(r"(?:.*\.)?blocks\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    if name.split(".")[0] in EMBEDDING_NAMES:
        return 0
    return num_layers + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Parameter groups: decayed weights, and biases, norms, tokens and position embeddings without decay.

    With ``layer_decay`` (0 < d <= 1) each group also gets ``lr_scale = d ** (last - depth)``: the head
    keeps the full LR, block ``i`` gets ``d ** (num_blocks - i)``, the embeddings the smallest scale.
    ``build_optimizer`` multiplies each group's LR by it before a scheduler is attached.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    num_layers = len(getattr(model, "blocks", ()))
    if layer_decay is not None:
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        if num_layers == 0:
            raise ValueError("layer_decay needs a model with a `blocks` sequence of transformer blocks")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name in skip or name.split(".")[-1] in skip
        depth = layer_id(name, num_layers) if layer_decay is not None else 0
        group = groups.setdefault((depth, no_decay), {"params": [], "weight_decay": 0.0 if no_decay else weight_decay})
        if layer_decay is not None:
            group["lr_scale"] = layer_decay ** (num_layers + 1 - depth)
        group["params"].append(param)
    if layer_decay is None:  # always the same two groups, decayed first
        return [
            groups.get((0, flag), {"params": [], "weight_decay": 0.0 if flag else weight_decay})
            for flag in (False, True)
        ]
    return [groups[key] for key in sorted(groups)]


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's LR by its ``lr_scale`` (call once, before a scheduler records initial LRs)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)


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


TIMM_OPTIMIZERS = {
    "lamb": "LAMB (layer-wise adaptive moments), timm; for large batches.",
    "lars": "LARS (layer-wise adaptive rate scaling), timm.",
    "lion": "Lion (sign momentum), timm; use ~3-10x smaller lr and larger weight decay than AdamW.",
    "adan": "Adan (adaptive Nesterov momentum), timm.",
    "adamp": "AdamP, timm.",
    "sgdp": "SGDP, timm.",
    "radam": "RAdam (rectified Adam), timm.",
    "nadamw": "NAdamW (Nesterov Adam, decoupled decay), timm.",
    "adabelief": "AdaBelief, timm.",
    "adafactor": "Adafactor, timm.",
    "adopt": "ADOPT, timm.",
    "laprop": "LaProp, timm.",
    "madgrad": "MADGRAD, timm.",
    "rmsproptf": "RMSprop with TensorFlow-style epsilon, timm.",
}


def _timm_factory(opt: str, doc: str) -> Any:
    def factory(params: list[dict[str, Any]], lr: float = 1e-3, weight_decay: float = 0.05, **kwargs: Any) -> Any:
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(params, opt=opt, lr=lr, weight_decay=weight_decay, **kwargs)

    factory.__doc__ = f"{doc} Other keys go to timm.optim.create_optimizer_v2."
    factory.__name__ = opt
    return factory


for _opt, _doc in TIMM_OPTIMIZERS.items():
    register_optimizer(_opt)(_timm_factory(_opt, _doc))


@register_optimizer("timm")
def timm_optimizer(
    params: list[dict[str, Any]], opt: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.05, **kwargs: Any
) -> torch.optim.Optimizer:
    """Any optimizer timm knows, by ``opt`` name (see timm.optim.list_optimizers())."""
    from timm.optim import create_optimizer_v2, list_optimizers

    if opt not in list_optimizers():
        import difflib

        close = difflib.get_close_matches(opt, list_optimizers(), n=1)
        raise ValueError(f"timm has no optimizer {opt!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return create_optimizer_v2(params, opt=opt, lr=lr, weight_decay=weight_decay, **kwargs)
