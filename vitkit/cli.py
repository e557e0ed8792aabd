"""The ``vitkit`` command. Heavy imports (torch, timm, matplotlib) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from vitkit.errors import UserError

REGISTRY_KINDS = ("models", "attention", "augmentations", "optimizers", "schedulers", "datasets", "losses")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other vitkit error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vitkit",
        description="Train, evaluate and use Vision Transformers from TOML recipes.",
        epilog="Set VITKIT_DEBUG=1 to see tracebacks of user errors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="train + evaluate + plot a recipe")
    run.add_argument("recipe", nargs="?", help="TOML recipe file (not with --resume)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from RUN_DIR/checkpoints/last.pt, in the same directory",
    )
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

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=REGISTRY_KINDS, help="which registry")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    return parser


def _run(args: argparse.Namespace) -> int:
    from vitkit.recipe import load_recipe

    if args.resume is not None:
        return _resume(args)
    if args.recipe is None:
        raise UserError("vitkit run: give a RECIPE file, or --resume RUN_DIR to continue a run")
    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        from vitkit.engine.summary import describe

        describe(recipe)
        return 0
    from vitkit.engine.faults import fit_guarded

    fit_guarded(recipe)
    return 0


def _resume(args: argparse.Namespace) -> int:
    if args.recipe is not None:
        raise UserError(f"vitkit run: give either a recipe ({args.recipe}) or --resume RUN_DIR, not both")
    if args.overrides or args.dry_run:
        raise UserError("vitkit run --resume: --set and --dry-run do not apply; a run continues with its own recipe")
    from vitkit.engine.faults import fit_guarded
    from vitkit.engine.resume import open_run

    recipe, state = open_run(args.resume)
    fit_guarded(recipe, resume=state, run_dir=Path(args.resume))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vitkit.engine.reevaluate import reevaluate

    reevaluate(Path(args.run_dir), args.split)
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


COMMANDS = {"run": _run, "eval": _eval, "list": _list}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument (one line, code 2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        if os.environ.get("VITKIT_DEBUG"):
            raise
        print(f"vitkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"vitkit: {err or 'interrupted'}", file=sys.stderr)
        return 130
