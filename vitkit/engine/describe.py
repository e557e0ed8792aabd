"""``--dry-run``: validate a recipe and describe its model without touching data."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from vitkit.engine import build
from vitkit.engine.console import console
from vitkit.engine.flops import count_flops, gmacs
from vitkit.recipe import Recipe
from vitkit.registry import DATASETS, split_spec


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
        "gmacs": gmacs(flops),
        "input": f"{in_chans}x{img_size}x{img_size}",
        "classes": num_classes,
    }
    table = Table(title=f"{recipe.name}: dry run (recipe valid)", show_header=False)
    labels = {"gflops": "GFLOPs/img (mult-add = 2)", "gmacs": 'GMACs/img (papers\' "FLOPs")'}
    for key, value in info.items():
        table.add_row(
            labels.get(key, key),
            f"{value:,}" if isinstance(value, int) else f"{value:.3g}" if isinstance(value, float) else value,
        )
    table.add_row("dataset", name)
    table.add_row("optimizer", recipe.optimizer["name"])
    table.add_row("scheduler", recipe.scheduler["name"])
    console.print(table)
    return info
