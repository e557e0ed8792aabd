"""What a trial's model costs, for multi-objective studies: ``gmacs`` (forward multiply-adds per image,
attention included) and ``infer_img_per_s`` (batched inference throughput on the trial's device, in its
precision). Both depend on the architecture and input size only, not on the trained weights."""

from __future__ import annotations

import statistics
from typing import Any

from vitkit.recipe import Recipe

INFER_BATCH = 32  # images per timed forward pass
INFER_ITERS, INFER_REPEATS, INFER_WARMUP = 5, 3, 2


def model_costs(recipe: Recipe, data: Any, metrics: list[str]) -> dict[str, float]:
    """The ``metrics`` (of ``gmacs``, ``infer_img_per_s``) of the model ``recipe`` builds for ``data``."""
    from vitkit.engine import build
    from vitkit.engine.device import select_device
    from vitkit.engine.efficiency import resolve_precision

    device = select_device(recipe.train.device)
    img_size = build.model_img_size(recipe)
    model = build.build_model(recipe, len(data.classes), data.in_chans, pretrained=False).to(device)
    out: dict[str, float] = {}
    if "gmacs" in metrics:
        from vitkit.engine.flops import count_flops, gmacs

        out["gmacs"] = gmacs(count_flops(model, data.in_chans, img_size))
    if "infer_img_per_s" in metrics:
        from vitkit.commands.bench.measure import infer_step, time_interleaved

        precision, _ = resolve_precision(recipe.train.precision, device, model, data.in_chans, img_size)
        step = infer_step(model, INFER_BATCH, img_size, data.in_chans, precision)
        seconds = time_interleaved({"model": step}, device, INFER_ITERS, INFER_REPEATS, INFER_WARMUP)["model"]
        out["infer_img_per_s"] = INFER_BATCH / statistics.median(seconds)
    return out
