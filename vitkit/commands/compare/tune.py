"""``vitkit compare --tune N --space ...``: tune every recipe variant with the same budget (N finished trials
over the same space, the same sampler seed, the same pruner) before its runs, so that no variant loses for
running with hyperparameters that were tuned for another. Each variant then trains its best values with
``--seeds``/``--folds`` as usual, and the verdict is made on those runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitkit.commands.compare.plan import Variant, run_name
from vitkit.commands.tune.space import parse_space, toml_value
from vitkit.errors import UserError


def tune_variants(
    variants: list[Variant],
    overrides: list[str],
    out_dir: Path,
    trials: int,
    space: list[str],
    plugins: tuple[str, ...],
    entry_points: bool,
    jobs: int = 1,
) -> dict[str, dict[str, Any]]:
    """Run one study per recipe variant into ``out_dir/<variant>-tune/<time>/``; the best values become the
    variant's own keys. Returns {variant label: {"params": ..., "value": ..., "study_dir": ...}}."""
    from vitkit.commands.tune.command import tune
    from vitkit.plugin_loader import load_plugins, record_cli_plugins
    from vitkit.recipe import load_recipe

    if trials < 1:
        raise UserError(f"--tune {trials}: expected at least 1 trial per variant")
    for variant in variants:
        varied = {o.split("=")[0].strip() for o in variant.overrides}
        clash = varied & {param.key for param in parse_space(space)}
        if clash:
            raise UserError(f"--space {sorted(clash)[0]}: that key is what --vary compares; tune the others")
    tuned: dict[str, dict[str, Any]] = {}
    for variant in variants:
        if variant.run_dir is not None:  # a finished run: compared as it is
            continue
        extra = [f'output.dir="{out_dir.as_posix()}"', f'name="{run_name(variant.label)}"']
        recipe = load_recipe(variant.source, [*overrides, *variant.overrides, *extra])
        manager, _ = load_plugins(recipe.plugins, plugins, entry_points=entry_points, recipe_file=recipe.where())
        record_cli_plugins(recipe, plugins)
        try:
            summary = tune(recipe, space, trials=trials, jobs=jobs, new=True, plugins=manager)
        except UserError as err:
            raise UserError(f"compare variant {variant.label!r} (--tune): {err}") from None
        best = summary["best"]
        if best is None:
            raise UserError(
                f"compare variant {variant.label!r}: no trial of its study finished ({summary['study_dir']})"
            )
        variant.overrides = [*variant.overrides, *(f"{k}={toml_value(v)}" for k, v in best["params"].items())]
        tuned[variant.label] = {
            "params": best["params"],
            "value": best["value"],
            "trials": summary["counts"]["finished"],
            "study_dir": summary["study_dir"],
        }
    return tuned
