"""``vitkit run RECIPE_OR_DIR`` (train, evaluate, plot) and ``vitkit run --resume RUN_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from vitkit.commands import Command
from vitkit.commands.common import add_overrides, load_plugins
from vitkit.errors import UserError


def add_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "recipe", nargs="?", metavar="RECIPE_OR_DIR", help="TOML recipe, or a folder of images (not with --resume)"
    )
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from RUN_DIR/checkpoints/last.pt, in the same directory",
    )
    add_overrides(run, "override a recipe key, value in TOML (repeatable): --set train.epochs=5")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the recipe and build the model; no data, no training (a folder: print its recipe as TOML)",
    )
    run.add_argument("--lr", metavar="auto", help="auto: set optimizer.lr from the LR finder's valley first")
    run.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (train.threads; default: one per core): limit it when runs share a machine",
    )


def main(args: argparse.Namespace) -> int:
    from vitkit.recipe import load_recipe

    if args.resume is not None:
        return resume(args)
    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")
    if args.recipe is None:
        raise UserError("vitkit run: give a RECIPE file or a folder of images, or --resume RUN_DIR to continue a run")
    if args.lr not in (None, "auto"):
        raise UserError(f"vitkit run: --lr {args.lr!r}: only 'auto' (set a number with --set optimizer.lr=...)")
    if Path(args.recipe).is_dir():
        from vitkit.commands.run.folder import run_folder

        return run_folder(args.recipe, args.overrides, args.dry_run, args.lr == "auto", lambda r: load_plugins(args, r))
    recipe = load_recipe(args.recipe, args.overrides)
    from vitkit.engine.elastic import restarted_run
    from vitkit.plugin_loader import record_cli_plugins

    record_cli_plugins(recipe, args.plugins)  # the saved recipe names them: later commands load them
    restarted = None if args.dry_run else restarted_run(recipe)  # the recipe as its first attempt saved it
    if restarted is not None:  # torchrun restarted the workers: continue that run's directory
        args.resume, args.recipe, args.overrides = str(restarted), None, []
        return resume(args)
    manager, _ = load_plugins(args, recipe)
    if args.dry_run:
        from vitkit.engine.describe import describe

        describe(recipe)
        return 0
    if args.lr == "auto":
        from vitkit.commands.run.folder import fit

        fit(recipe, manager, lr_auto=True)
        return 0
    from vitkit.engine.fit import fit_guarded

    fit_guarded(recipe, plugins=manager)
    return 0


def resume(args: argparse.Namespace) -> int:
    """``vitkit run --resume RUN_DIR``: the run continues with its own recipe, in its own directory."""
    if args.recipe is not None:
        raise UserError(f"vitkit run: give either a recipe ({args.recipe}) or --resume RUN_DIR, not both")
    if args.overrides or args.dry_run or args.lr:
        raise UserError("vitkit run --resume: --set and --dry-run do not apply; a run continues with its own recipe")
    from vitkit.engine.fit import fit_guarded
    from vitkit.runs.resume import resume_state

    recipe, state = resume_state(args.resume)
    if args.threads is not None:  # how fast, not what: a resumed run may use other threads
        if args.threads < 0:
            raise UserError(f"vitkit run --threads: expected a value >= 0, got {args.threads}")
        recipe.train.threads = args.threads
    manager, _ = load_plugins(args, recipe)
    fit_guarded(recipe, resume=state, run_dir=Path(args.resume), plugins=manager)
    return 0


COMMANDS = (Command("run", "train + evaluate + plot a recipe", add_arguments, main),)
