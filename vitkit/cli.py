"""The ``vitkit`` command. Heavy imports (torch, timm, matplotlib) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from vitkit.errors import UserError

REGISTRY_KINDS = ("models", "attention", "augmentations", "optimizers", "schedulers", "datasets", "losses")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitkit",
        description="Train, evaluate and use Vision Transformers from TOML recipes.",
        epilog="Set VITKIT_DEBUG=1 to see tracebacks of user errors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="train + evaluate + plot a recipe")
    run.add_argument("recipe", help="TOML recipe file")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, value in TOML (repeatable): --set train.epochs=5",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="validate the recipe and build the model; no data, no training"
    )

    ev = sub.add_parser("eval", help="re-evaluate a finished run's best checkpoint")
    ev.add_argument("run_dir", help="run directory (runs/<name>/<time>/) or checkpoint file")
    ev.add_argument("--split", choices=("test", "val"), default="test")

    cmp = sub.add_parser(
        "compare",
        help="train recipe variants (or take finished runs) and rank them side by side",
        description="Train every recipe x every combination of --vary values (cartesian product), or take "
        "finished run directories; print a ranked table and write compare.csv, compare.json, "
        "compare_loss.png and compare_accuracy.png into <output.dir>/compare-<time>/.",
    )
    cmp.add_argument("sources", nargs="+", metavar="RECIPE_OR_RUN", help="TOML recipes and/or finished run directories")
    cmp.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one variant per value, TOML values (repeatable: all combinations): --vary model.attention=softmax,linear",
    )
    cmp.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every recipe (repeatable): --set train.epochs=5",
    )
    cmp.add_argument(
        "--rank-by",
        default="test_acc",
        metavar="METRIC",
        help="test_acc (default), best_val_acc, train_img_per_s, infer_img_per_s, params, gflops, wall_time_s",
    )
    cmp.add_argument("--out", metavar="DIR", help="report folder (default: <output.dir>/compare-<time>/)")

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=REGISTRY_KINDS, help="which registry")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    return parser


def _run(args: argparse.Namespace) -> int:
    from vitkit.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        from vitkit.engine.summary import describe

        describe(recipe)
        return 0
    from vitkit.engine.trainer import Trainer

    Trainer(recipe).fit()
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vitkit.engine.reevaluate import reevaluate

    reevaluate(Path(args.run_dir), args.split)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from vitkit.engine.compare import compare

    compare(args.sources, args.vary, args.overrides, args.rank_by, args.out)
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vitkit.registry import REGISTRIES

    entries = REGISTRIES[args.kind].entries(args.pattern)
    table = Table(title=f"{args.kind} ({len(entries)})")
    table.add_column("name", style="bold")
    table.add_column("from")
    table.add_column("description")
    for entry in entries:
        table.add_row(entry.name, entry.origin, entry.doc)
    Console().print(table)
    return 0


COMMANDS = {"run": _run, "eval": _eval, "compare": _compare, "list": _list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        if os.environ.get("VITKIT_DEBUG"):
            raise
        print(f"vitkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vitkit: interrupted", file=sys.stderr)
        return 130
