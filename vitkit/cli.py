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

    _add_bench(sub)

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=REGISTRY_KINDS, help="which registry")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")
    return parser


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure img/s, TFLOP/s and memory of a model or recipe (optionally vs timm)")
    bench.add_argument("target", metavar="MODEL_OR_RECIPE", help="registered model name or TOML recipe")
    bench.add_argument("--batch-size", type=int, help="images per step (default: the recipe's, else 64)")
    bench.add_argument("--img-size", type=int, help="input size (default: the model's)")
    bench.add_argument("--patch-size", type=int, help="patch size (default: the model's)")
    bench.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="default: the recipe's, else auto")
    bench.add_argument("--compile", action="store_true", help="torch.compile the model(s) first")
    bench.add_argument("--vs", choices=("timm",), help="also time timm's ViT (same config, same weights), interleaved")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="training steps only (forward, backward, AdamW)")
    mode.add_argument("--infer", action="store_true", help="inference only (no grad, eval mode)")
    bench.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default: 5)")
    bench.add_argument("--repeats", type=int, default=7, help="repeats; the median is reported (default: 7)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    bench.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: the recipe's, else auto)")
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")


def _bench(args: argparse.Namespace) -> int:
    from vitkit.engine.bench_command import bench_command

    return bench_command(args)


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


COMMANDS = {"run": _run, "eval": _eval, "list": _list, "bench": _bench}


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
