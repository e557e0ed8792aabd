"""``vitkit lr-find RECIPE_OR_DIR``: run the LR range test (``vitkit.engine.lr_finder``), print its
suggestions, write ``lr_find.png`` and ``lr_find.csv``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitkit.commands import Command
from vitkit.commands.common import add_overrides, load_plugins
from vitkit.engine.lr_finder import DEFAULT_END, DEFAULT_START, DEFAULT_STEPS

if TYPE_CHECKING:
    from vitkit.engine.lr_finder import LRFindResult
    from vitkit.recipe import Recipe


def report(result: LRFindResult) -> list[str]:
    """The lines ``vitkit lr-find`` prints: what ran, why it stopped, each suggestion named."""
    from vitkit.engine.lr_finder import SUGGESTION_NOTES

    ended = f"stopped after {result.steps}: {result.stop_reason}" if result.stop_reason else "ran to the end"
    lines = [
        f"lr-find: {result.planned} updates planned, lr {result.start:.0e} to {result.end:.0e}; "
        f"{ended} ({result.seconds:.1f} s)"
    ]
    if not result.suggestions:
        lines.append("  no suggestion: too few updates before the loss diverged (lower --start or raise --steps)")
    for name, lr in result.suggestions.items():
        lines.append(f"  {name:<9}{lr:.2e}  {SUGGESTION_NOTES[name]}")
    if result.recipe_lr is not None:
        lines.append(f"  {'recipe':<9}{result.recipe_lr:.2e}  optimizer.lr now")
    return lines


def lr_find_command(
    recipe: Recipe, steps: int, start: float, end: float, out: str | Path | None = None, plugins: Any = None
) -> int:
    """``vitkit lr-find``: run the sweep, print the suggestions, write ``lr_find.png`` and ``lr_find.csv``
    into ``out`` (``None``: a new ``<output.dir>/<name>/lr_find-<time>/``) and print their paths."""
    from vitkit.engine.console import console
    from vitkit.engine.lr_finder import lr_find, write_outputs
    from vitkit.runs.layout import new_run_dir

    result = lr_find(recipe, steps, start, end, None, plugins)
    for line in report(result):
        console.print(line, soft_wrap=True)
    folder = Path(out) if out is not None else new_run_dir(recipe, prefix="lr_find-")
    for path in write_outputs(result, folder, recipe.name):
        console.print(f"wrote {path}", soft_wrap=True)
    return 0


def add_arguments(lrf: argparse.ArgumentParser) -> None:
    lrf.add_argument("recipe", metavar="RECIPE_OR_DIR", help="TOML recipe, or a folder of images (as vitkit run DIR)")
    add_overrides(lrf)
    lrf.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"updates (default {DEFAULT_STEPS})")
    lrf.add_argument("--start", type=float, default=DEFAULT_START, help=f"first LR (default {DEFAULT_START:g})")
    lrf.add_argument("--end", type=float, default=DEFAULT_END, help=f"last LR (default {DEFAULT_END:g})")
    lrf.add_argument(
        "--out",
        metavar="DIR",
        help="folder for lr_find.png and lr_find.csv (default <output.dir>/<name>/lr_find-<time>/)",
    )


def main(args: argparse.Namespace) -> int:
    from vitkit.commands.run.folder import recipe_for

    recipe = recipe_for(args.recipe, args.overrides)
    manager, _ = load_plugins(args, recipe)
    return lr_find_command(recipe, args.steps, args.start, args.end, args.out, manager)


COMMANDS = (
    Command(
        "lr-find",
        "LR range test: sweep the learning rate, suggest one, plot lr_find.png (weights untouched)",
        add_arguments,
        main,
    ),
)
