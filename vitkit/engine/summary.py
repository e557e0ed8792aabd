"""``--dry-run``: validate a recipe and describe its model without touching data."""

from __future__ import annotations

from typing import Any

import torch
from rich.table import Table

from vitkit.engine import build
from vitkit.engine.console import console
from vitkit.recipe import Recipe
from vitkit.registry import DATASETS, split_spec


def count_flops(model: torch.nn.Module, in_chans: int, img_size: int) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, img_size, img_size, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


def describe(recipe: Recipe) -> dict[str, Any]:
    """Build every component the recipe names except the data; print the model's size and cost."""
    img_size = build.model_img_size(recipe)
    name, _ = split_spec(recipe.data.dataset)
    if name in DATASETS:  # class attributes describe the dataset without loading it
        dataset = build.build_dataset(recipe, img_size)
        num_classes, in_chans = len(dataset.classes), dataset.in_chans
    else:
        build.build_dataset(recipe, img_size)  # raises the unknown-name error
    model = build.build_model(recipe, num_classes, in_chans, pretrained=False)
    build.build_augments(recipe, num_classes, img_size)
    build.build_loss(recipe, num_classes, in_chans, img_size)
    optimizer = build.build_optimizer(recipe, model)
    build.build_scheduler(recipe, optimizer, 100, 10)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, in_chans, img_size)
    info = {
        "model": recipe.model["name"],
        "params": params,
        "gflops": flops / 1e9,
        "input": f"{in_chans}x{img_size}x{img_size}",
        "classes": num_classes,
    }
    table = Table(title=f"{recipe.name}: dry run (recipe valid)", show_header=False)
    for key, value in info.items():
        table.add_row(
            key, f"{value:,}" if isinstance(value, int) else f"{value:.3f}" if isinstance(value, float) else value
        )
    table.add_row("dataset", name)
    table.add_row("optimizer", recipe.optimizer["name"])
    table.add_row("scheduler", recipe.scheduler["name"])
    console.print(table)
    return info
