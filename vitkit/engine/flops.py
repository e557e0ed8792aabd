"""Forward FLOPs per image, counted by ``torch.utils.flop_counter`` with attention included.

``FlopCounterMode`` knows the CUDA kernels behind ``F.scaled_dot_product_attention`` (flash,
memory-efficient, cuDNN) but not the CPU one (``_scaled_dot_product_flash_attention_for_cpu``)
nor the backend-neutral ``_scaled_dot_product_fused_attention_overrideable``: on CPU every
attention that runs through SDPA (softmax, cosine, LSA, CaiT, plugins) lost its two matmuls,
``q k^T`` and ``attn v``. Here those ops get torch's own SDPA formula, so the count is the same
on every device. A multiply-add counts 2 FLOPs; papers (ViT, DeiT) print multiply-adds as
"FLOPs", so ``GMACs = GFLOPs / 2`` is what to hold against their tables (DeiT-S: 4.6).
"""

from __future__ import annotations

from typing import Any

import torch


def _sdpa_forward(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_backward(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def sdpa_formulas() -> dict[Any, Any]:
    """``custom_mapping`` for ``FlopCounterMode``: the SDPA kernels its registry lacks in this torch."""
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    wanted = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_forward,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_forward,
        "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_backward,
    }
    mapping = {}
    for name, formula in wanted.items():
        op = getattr(aten, name, None)
        if op is not None and op not in flop_registry:
            mapping[op] = formula
    return mapping


def counter(**kwargs: Any) -> Any:
    """A ``FlopCounterMode`` that also counts SDPA on CPU (``display=False`` unless given)."""
    from torch.utils.flop_counter import FlopCounterMode

    kwargs.setdefault("display", False)
    return FlopCounterMode(custom_mapping=sdpa_formulas(), **kwargs)


def count_flops(model: torch.nn.Module, in_chans: int, img_size: int) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), attention matmuls included."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, img_size, img_size, device=next(model.parameters()).device)
    with torch.no_grad(), counter() as flops:
        model(x)
    model.train(was_training)
    return flops.get_total_flops()


def gmacs(flops: float) -> float:
    """Giga multiply-accumulates (the papers' "FLOPs") from a FLOP count."""
    return flops / 2e9
