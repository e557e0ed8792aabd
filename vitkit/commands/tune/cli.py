"""``vitkit tune RECIPE_OR_DIR``: search hyperparameters with Optuna; the study's folder holds best.toml."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import add_overrides, load_plugins
from vitkit.errors import UserError

DESCRIPTION = (
    "Train trials of a recipe over a search space, ranked on validation only; the study lives in "
    "<output.dir>/<name>-tune/<time>/ (study.db, trials.csv, best.toml, plots, tune.html) and the same "
    "command continues it. Needs the extra: pip install 'vitkit[tune]'."
)


def add_arguments(tune: argparse.ArgumentParser) -> None:
    tune.add_argument("recipe", nargs="?", metavar="RECIPE_OR_DIR", help="TOML recipe, or a folder of images")
    tune.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=DIST",
        help="a searched key (repeatable): loguniform(a,b) | uniform(a,b) | int(a,b) | choice(x,y,...), "
        "e.g. --space optimizer.lr=loguniform(1e-4,3e-3); adds to the recipe's [tune] space",
    )
    tune.add_argument("--trials", type=int, metavar="N", help="trials to finish, complete or pruned (tune.trials)")
    tune.add_argument(
        "--metric",
        action="append",
        metavar="M",
        help="best_val_loss (default: val loss of the kept epoch), best_val_acc, ...; repeat it for a Pareto "
        "front, e.g. --metric best_val_acc --metric infer_img_per_s (or gmacs, params)",
    )
    tune.add_argument(
        "--direction", action="append", choices=("auto", "minimize", "maximize"), help="default: auto (per metric)"
    )
    tune.add_argument("--sampler", choices=("tpe", "random"), help="default: tpe, seeded")
    tune.add_argument("--pruner", choices=("median", "hyperband", "none"), help="default: median")
    tune.add_argument("--seed", type=int, metavar="S", help="the sampler's seed (tune.seed)")
    tune.add_argument("--folds", type=int, metavar="K", help="score each trial by K-fold cross-validation")
    tune.add_argument("--storage", metavar="URL", help="Optuna storage URL shared by workers (default: study.db)")
    tune.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="trials at once (CPU: --threads each, else the cores split)"
    )
    tune.add_argument("--new", action="store_true", help="start a new study instead of continuing the same one")
    tune.add_argument(
        "--study-name",
        metavar="NAME",
        help="join (or create) the study NAME on purpose, e.g. one another machine started with --new; it must "
        "search the same recipe, space and settings (default: <name>-tune-<fingerprint of what it searches>)",
    )
    tune.add_argument("--threads", type=int, metavar="N", help="CPU threads per trial (train.threads)")
    add_overrides(tune)
    tune.add_argument("--worker", metavar="STUDY_DIR", help=argparse.SUPPRESS)  # one process of --jobs N


def main(args: argparse.Namespace) -> int:
    from vitkit.commands.tune import command

    if args.worker:
        return command.worker_main(args.worker, args.threads, lambda recipe: load_plugins(args, recipe)[0])
    if args.recipe is None:
        raise UserError("vitkit tune: give a RECIPE file or a folder of images")
    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")
    from vitkit.commands.run.folder import recipe_for
    from vitkit.plugin_loader import record_cli_plugins

    recipe = recipe_for(args.recipe, args.overrides)
    record_cli_plugins(recipe, args.plugins)
    manager, _ = load_plugins(args, recipe)
    command.tune(
        recipe, args.space, args.trials, args.metric, args.direction, args.sampler, args.pruner, args.seed,
        args.folds, args.storage, args.jobs, args.new, manager, args.study_name,
    )  # fmt: skip
    return 0


COMMANDS = (
    Command(
        "tune",
        "search hyperparameters with Optuna (TPE, pruning, resumable, parallel); writes best.toml",
        add_arguments,
        main,
        description=DESCRIPTION,
    ),
)
