"""``vitkit compare RECIPE_OR_RUN...``: train variants (or take finished runs) and rank them side by side."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import add_overrides

DESCRIPTION = (
    "Train every recipe x every combination of --vary values (cartesian product), or take "
    "finished run directories; print a ranked table and write compare.csv, compare.json, "
    "compare_loss.png, compare_accuracy.png and compare.html into <output.dir>/compare-<time>/. "
    "Variants are ranked on validation accuracy (test beside it). --seeds/--folds repeat every variant "
    "and add mean, sd, 95% intervals (inside [0, 1]) and paired t-test verdicts."
)


def add_arguments(cmp: argparse.ArgumentParser) -> None:
    cmp.add_argument("sources", nargs="+", metavar="RECIPE_OR_RUN", help="TOML recipes and/or finished run directories")
    cmp.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="one variant per value, TOML values (repeatable: all combinations): --vary model.attention=softmax,linear",
    )
    add_overrides(cmp, "override a key in every recipe (repeatable): --set train.epochs=5")
    cmp.add_argument(
        "--rank-by",
        metavar="METRIC",
        help="best_val_acc (default), train_img_per_s, infer_img_per_s, params, gflops, gmacs, wall_time_s; "
        "test_acc is shown beside it, never ranked on",
    )
    cmp.add_argument("--out", metavar="DIR", help="report folder (default: <output.dir>/compare-<time>/)")
    repeats = cmp.add_mutually_exclusive_group()
    repeats.add_argument(
        "--seeds", type=int, metavar="N", help="train every variant with the same N seeds (matched pairs)"
    )
    repeats.add_argument(
        "--folds", type=int, metavar="K", help="K-fold cross-validation on train+val (stratified; test untouched)"
    )
    cmp.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="runs trained at once (CPU: threads split; GPUs: one each)"
    )
    cmp.add_argument("--tune", type=int, metavar="N", help="first tune each recipe variant with N trials (vitkit tune)")
    cmp.add_argument(
        "--space", action="append", default=[], metavar="KEY=DIST", help="with --tune: a searched key (as vitkit tune)"
    )


def main(args: argparse.Namespace) -> int:
    from vitkit.commands.compare.command import compare

    compare(
        args.sources,
        args.vary,
        args.overrides,
        args.rank_by,
        args.out,
        plugins=args.plugins,
        entry_points=not args.no_plugins,
        seeds=args.seeds,
        folds=args.folds,
        jobs=args.jobs,
        tune=args.tune,
        space=args.space,
    )
    return 0


COMMANDS = (
    Command(
        "compare",
        "train recipe variants (or take finished runs) and rank them side by side",
        add_arguments,
        main,
        description=DESCRIPTION,
    ),
)
