"""The ``vitkit`` command. Heavy imports (torch, timm, matplotlib) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vitkit.errors import PeerLost, UserError

if TYPE_CHECKING:
    from pluggy import PluginManager

    from vitkit.plugin_loader import LoadedPlugin
    from vitkit.recipe import Recipe

REGISTRY_KINDS = (
    "models",
    "attention",
    "augmentations",
    "optimizers",
    "schedulers",
    "datasets",
    "losses",
    "pos_embed",
    "mlp",
)


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
    run.add_argument(
        "recipe", nargs="?", metavar="RECIPE_OR_DIR", help="TOML recipe, or a folder of images (not with --resume)"
    )
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

    ev = sub.add_parser(
        "eval", help="re-evaluate a finished run's best checkpoint: accuracy, per-class table, confusion matrix"
    )
    ev.add_argument("run_dir", help="run directory (runs/<name>/<time>/) or checkpoint file")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--data", metavar="ROOT", help="read the dataset from ROOT instead of the recipe's data.root")
    ev.add_argument("--tta", choices=("flip", "crops"), help="also score test-time augmentation (mean probabilities)")

    pr = sub.add_parser("predict", help="classify your own images with a trained run")
    pr.add_argument("model", help="run directory, checkpoint (best.pt / last.pt) or model.safetensors")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument("--topk", type=int, default=3, help="labels shown per image (default 3)")
    pr.add_argument("--out", metavar="FILE.png", help="write a grid of the images with their predictions")
    pr.add_argument("--json", dest="json_path", metavar="FILE", help="write all results as JSON")
    pr.add_argument("--attention", action="store_true", help="overlay attention rollout and last-layer attention")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    pr.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    pr.add_argument("--tta", choices=("flip", "crops"), help="average probabilities over flipped or cropped views")

    ex = sub.add_parser(
        "export",
        help="export a run's model: safetensors, TorchScript, ONNX or a Hugging Face Hub folder; int8, pruning",
    )
    ex.add_argument("model", help="run directory or checkpoint file")
    ex.add_argument(
        "--format",
        dest="fmt",
        choices=("safetensors", "torchscript", "onnx", "hf"),
        default="safetensors",
        help="hf: timm's Hub folder (config.json, model.safetensors, model card), see docs/share.md",
    )
    ex.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization of Linear layers (CPU)")
    ex.add_argument("--prune", type=float, metavar="AMOUNT", help="zero this share of Linear weights (0-1), globally")
    ex.add_argument(
        "--out", metavar="PATH", help="output file or hf folder (default: <run>/export/model.<format suffix> or hf/)"
    )
    ex.add_argument("--force", action="store_true", help="overwrite an existing output file (or non-empty folder)")

    cmp = sub.add_parser(
        "compare",
        help="train recipe variants (or take finished runs) and rank them side by side",
        description="Train every recipe x every combination of --vary values (cartesian product), or take "
        "finished run directories; print a ranked table and write compare.csv, compare.json, "
        "compare_loss.png, compare_accuracy.png and compare.html into <output.dir>/compare-<time>/. "
        "Variants are ranked on validation accuracy (test beside it). --seeds/--folds repeat every variant "
        "and add mean, sd, 95% intervals (inside [0, 1]) and paired t-test verdicts.",
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

    _add_bench(sub)
    lrf = _add_lr_find(sub)

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=REGISTRY_KINDS, help="which registry")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")

    np_ = sub.add_parser("new-plugin", help="write an installable plugin package with an attention to start from")
    np_.add_argument("name", help="package folder to create (its name is the distribution name)")
    np_.add_argument("--attention", metavar="NAME", help="registered attention name (default: from the package name)")
    _add_runs(sub)
    _add_audit(sub)
    _add_push(sub)
    serve = _add_serve(sub)
    tune = _add_tune(sub)
    from vitkit.apps.cache_command import add_cache_command

    add_cache_command(sub)
    _add_shards(sub)

    pl = sub.add_parser("plugins", help="list loaded plugins and the components each registered")
    pl.add_argument("recipe", nargs="?", help="also load this recipe's `plugins`")
    for command in (run, ev, pr, ex, cmp, ls, pl, lrf, serve, tune):
        _add_plugin_args(command)
    return parser


def _add_plugin_args(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="load a plugin module or .py file (repeatable)",
    )
    command.add_argument(
        "--no-plugins", action="store_true", help="do not load plugins installed as entry points (group 'vitkit')"
    )


def _load_plugins(args: argparse.Namespace, recipe: Recipe | None = None) -> tuple[PluginManager, list[LoadedPlugin]]:
    """The plugin manager and loaded plugins: entry points, then the recipe's, then --plugin."""
    from vitkit.plugin_loader import allow_entry_points, load_plugins

    allow_entry_points(not args.no_plugins)
    return load_plugins(
        recipe.plugins if recipe else (),
        args.plugins,
        entry_points=not args.no_plugins,
        recipe_file=str(recipe.source) if recipe and recipe.source else "recipe",
    )


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measure img/s, TFLOP/s and memory of a model or recipe (optionally vs timm)")
    bench.add_argument("target", metavar="MODEL_OR_RECIPE", help="registered model name or TOML recipe")
    bench.add_argument("--batch-size", type=int, help="images per step (default: the recipe's, else 64)")
    bench.add_argument("--img-size", type=int, help="input size (default: the model's)")
    bench.add_argument("--patch-size", type=int, help="patch size (default: the model's)")
    bench.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16", "both"),
        help="default: the recipe's, else auto; both: fp32 and bf16",
    )
    bench.add_argument("--compile", action="store_true", help="torch.compile the model(s) first")
    bench.add_argument("--vs", choices=("timm",), help="also time timm's ViT (same config, same weights), interleaved")
    bench.add_argument(
        "--grad-checkpointing", action="store_true", help="also time the model with gradient checkpointing"
    )
    bench.add_argument("--patch-drop", type=float, metavar="RATE", help="also time the model with this patch dropout")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="training steps only (forward, backward, AdamW)")
    mode.add_argument("--infer", action="store_true", help="inference only (no grad, eval mode)")
    bench.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default: 5)")
    bench.add_argument("--repeats", type=int, default=7, help="repeats; the median is reported (default: 7)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    bench.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: the recipe's, else auto)")
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")


def _add_push(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser("push", help="upload a run's Hugging Face Hub folder (vitkit export --format hf)")
    push.add_argument("model", metavar="RUN", help="run directory, checkpoint, or a folder export --format hf wrote")
    push.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repo (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--message", help="commit message (default: 'Add ORG/NAME (vitkit export --format hf)')")
    _add_plugin_args(push)


def _push(args: argparse.Namespace) -> int:
    from vitkit.apps.push import check_can_push, run_push

    token = check_can_push(args.repo_id)  # offline, no token: say so before plugins and the model load
    _load_plugins(args)
    return run_push(args.model, args.repo_id, args.private, args.message, token)


def _add_runs(sub: argparse._SubParsersAction) -> None:
    from vitkit.apps.runs import COLUMNS

    runs = sub.add_parser("runs", help="list every run under runs/ (or DIR): status, accuracy, resume command")
    runs.add_argument(
        "dir", nargs="?", default="runs", metavar="DIR", help="folder holding run directories (default runs)"
    )
    runs.add_argument("--sort", default="time", choices=COLUMNS, metavar="COL", help=f"sort by: {', '.join(COLUMNS)}")
    runs.add_argument("--reverse", action="store_true", help="reverse the order (accuracies sort best first)")
    runs.add_argument("--name", default="*", metavar="PATTERN", help="only runs whose name matches (fnmatch)")
    runs.add_argument("--model", default="*", metavar="PATTERN", help="only runs whose model matches (fnmatch)")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")


def _add_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = sub.add_parser(
        "serve", help="serve a trained model over HTTP: POST /predict with dynamic batching, a web page at /"
    )
    serve.add_argument("model", metavar="RUN_OR_DIR", help="run directory, checkpoint or model.safetensors")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    serve.add_argument("--max-batch", type=int, default=16, help="images per forward pass at most (default 16)")
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="wait for more images after the first (default 5 ms)"
    )
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    serve.add_argument("--tta", choices=("flip", "crops"), help="average probabilities over flipped or cropped views")
    return serve


def _serve(args: argparse.Namespace) -> int:
    _load_plugins(args)
    from vitkit.apps.serve import serve

    return serve(
        args.model, args.host, args.port, args.max_batch, args.max_wait_ms, args.max_upload_mb, args.device, args.tta
    )


def _runs(args: argparse.Namespace) -> int:
    from vitkit.apps.runs import runs_command

    return runs_command(args.dir, args.name, args.model, args.sort, args.reverse, args.json)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit", help="check a folder's data: duplicates and train/test leaks, likely label errors, class balance"
    )
    audit.add_argument("target", metavar="DIR_OR_RECIPE_OR_RUN", help="folder of images, recipe, or run directory")
    audit.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key"
    )
    audit.add_argument("--out", metavar="DIR", help="folder for audit.json/audit.html (default: RUN/audit/ or "
                       "<output.dir>/<name>/audit-<time>/)")  # fmt: skip
    audit.add_argument("--fix-plan", metavar="CSV", help="also write a path,action,label CSV for data.exclude")
    audit.add_argument("--no-labels", action="store_true", help="skip the label-error check (needs no cleanlab)")
    audit.add_argument("--folds", type=int, default=5, help="cross-validation folds for label errors (default 5)")
    audit.add_argument("--threshold", type=int, help="near copies: pHash bits of 64 that may differ (default 14)")
    audit.add_argument("--workers", type=int, help="threads decoding files (default: data.num_workers)")


def _audit(args: argparse.Namespace) -> int:
    from vitkit.apps.audit import audit_command

    return audit_command(args)


def _add_lr_find(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from vitkit.apps.lr_find import DEFAULT_END, DEFAULT_START, DEFAULT_STEPS

    lrf = sub.add_parser(
        "lr-find",
        help="LR range test: sweep the learning rate, suggest one, plot lr_find.png (weights untouched)",
    )
    lrf.add_argument("recipe", metavar="RECIPE_OR_DIR", help="TOML recipe, or a folder of images (as vitkit run DIR)")
    lrf.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key"
    )
    lrf.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"updates (default {DEFAULT_STEPS})")
    lrf.add_argument("--start", type=float, default=DEFAULT_START, help=f"first LR (default {DEFAULT_START:g})")
    lrf.add_argument("--end", type=float, default=DEFAULT_END, help=f"last LR (default {DEFAULT_END:g})")
    lrf.add_argument(
        "--out",
        metavar="DIR",
        help="folder for lr_find.png and lr_find.csv (default <output.dir>/<name>/lr_find-<time>/)",
    )
    return lrf


def _lr_find(args: argparse.Namespace) -> int:
    from vitkit.apps.lr_find import lr_find_command

    recipe = _recipe_for(args.recipe, args.overrides)
    manager, _ = _load_plugins(args, recipe)
    return lr_find_command(recipe, args.steps, args.start, args.end, args.out, manager)


def _add_shards(sub: argparse._SubParsersAction) -> None:
    from vitkit.apps.shards_command import add_shards_command

    add_shards_command(sub)


def _shards(args: argparse.Namespace) -> int:
    from vitkit.apps.shards_command import shards_command

    return shards_command(args)


def _add_tune(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    tune = sub.add_parser(
        "tune",
        help="search hyperparameters with Optuna (TPE, pruning, resumable, parallel); writes best.toml",
        description="Train trials of a recipe over a search space, ranked on validation only; the study lives in "
        "<output.dir>/<name>-tune/<time>/ (study.db, trials.csv, best.toml, plots, tune.html) and the same "
        "command continues it. Needs the extra: pip install 'vitkit[tune]'.",
    )
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
    tune.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key"
    )
    tune.add_argument("--worker", metavar="STUDY_DIR", help=argparse.SUPPRESS)  # one process of --jobs N
    return tune


def _tune(args: argparse.Namespace) -> int:
    from vitkit.apps import tune

    if args.worker:
        return tune.worker_main(args.worker, args.threads, lambda recipe: _load_plugins(args, recipe)[0])
    if args.recipe is None:
        raise UserError("vitkit tune: give a RECIPE file or a folder of images")
    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")
    recipe = _recipe_for(args.recipe, args.overrides)
    from vitkit.plugin_loader import record_cli_plugins

    record_cli_plugins(recipe, args.plugins)
    manager, _ = _load_plugins(args, recipe)
    tune.tune(
        recipe, args.space, args.trials, args.metric, args.direction, args.sampler, args.pruner, args.seed,
        args.folds, args.storage, args.jobs, args.new, manager, args.study_name,
    )  # fmt: skip
    return 0


def _cache(args: argparse.Namespace) -> int:
    from vitkit.apps.cache_command import cache_command

    return cache_command(args)


def _recipe_for(source: str, overrides: list[str]) -> Recipe:
    """A recipe file, or the recipe ``vitkit run DIR`` would choose for a folder of images."""
    from vitkit.recipe import load_recipe

    if Path(source).is_dir():
        from vitkit.apps.quickstart import folder_recipe

        recipe, choice = folder_recipe(source, overrides)
        print(f"vitkit run {choice.line}")
        return recipe
    return load_recipe(source, overrides)


def _bench(args: argparse.Namespace) -> int:
    from vitkit.apps.bench_command import bench_command

    return bench_command(args)


def _run(args: argparse.Namespace) -> int:
    from vitkit.recipe import load_recipe

    if args.resume is not None:
        return _resume(args)
    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")
    if args.recipe is None:
        raise UserError("vitkit run: give a RECIPE file or a folder of images, or --resume RUN_DIR to continue a run")
    if args.lr not in (None, "auto"):
        raise UserError(f"vitkit run: --lr {args.lr!r}: only 'auto' (set a number with --set optimizer.lr=...)")
    if Path(args.recipe).is_dir():
        from vitkit.apps.quickstart import run_folder

        return run_folder(
            args.recipe, args.overrides, args.dry_run, args.lr == "auto", lambda r: _load_plugins(args, r)
        )
    recipe = load_recipe(args.recipe, args.overrides)
    from vitkit.engine.elastic import restarted_run
    from vitkit.plugin_loader import record_cli_plugins

    record_cli_plugins(recipe, args.plugins)  # the saved recipe names them: later commands load them
    restarted = None if args.dry_run else restarted_run(recipe)  # the recipe as its first attempt saved it
    if restarted is not None:  # torchrun restarted the workers: continue that run's directory
        args.resume, args.recipe, args.overrides = str(restarted), None, []
        return _resume(args)
    manager, _ = _load_plugins(args, recipe)
    if args.dry_run:
        from vitkit.engine.summary import describe

        describe(recipe)
        return 0
    if args.lr == "auto":
        from vitkit.apps.quickstart import fit

        fit(recipe, manager, lr_auto=True)
        return 0
    from vitkit.engine.fit import fit_guarded

    fit_guarded(recipe, plugins=manager)
    return 0


def _resume(args: argparse.Namespace) -> int:
    if args.recipe is not None:
        raise UserError(f"vitkit run: give either a recipe ({args.recipe}) or --resume RUN_DIR, not both")
    if args.overrides or args.dry_run or args.lr:
        raise UserError("vitkit run --resume: --set and --dry-run do not apply; a run continues with its own recipe")
    from vitkit.engine.fit import fit_guarded
    from vitkit.engine.resume import open_run

    recipe, state = open_run(args.resume)
    if args.threads is not None:  # how fast, not what: a resumed run may use other threads
        if args.threads < 0:
            raise UserError(f"vitkit run --threads: expected a value >= 0, got {args.threads}")
        recipe.train.threads = args.threads
    manager, _ = _load_plugins(args, recipe)
    fit_guarded(recipe, resume=state, run_dir=Path(args.resume), plugins=manager)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from vitkit.apps.reevaluate import reevaluate

    _load_plugins(args)  # the run's own recipe plugins are loaded from its saved recipe
    reevaluate(Path(args.run_dir), args.split, data_root=args.data, tta=args.tta)
    return 0


def _predict(args: argparse.Namespace) -> int:
    _load_plugins(args)
    from vitkit.apps.predict_command import run_predict

    return run_predict(
        args.model, args.paths, args.topk, args.out, args.json_path, args.attention, args.device, args.batch_size,
        args.tta,
    )  # fmt: skip


def _export(args: argparse.Namespace) -> int:
    _load_plugins(args)
    from vitkit.apps.export import run_export

    run_export(args.model, args.fmt, args.quantize, args.prune, args.out, args.force)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from vitkit.apps.compare import compare

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


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vitkit.registry import REGISTRIES

    _load_plugins(args)
    entries = REGISTRIES[args.kind].entries(args.pattern)
    table = Table(title=f"{args.kind} ({len(entries)})")
    table.add_column("name", style="bold")
    table.add_column("from")
    table.add_column("description")
    for entry in entries:
        table.add_row(entry.name, entry.origin, entry.doc)
    Console().print(table)
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vitkit.recipe import load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else None
    _, loaded = _load_plugins(args, recipe)
    table = Table(title=f"plugins ({len(loaded)})")
    table.add_column("name", style="bold")
    table.add_column("source", overflow="fold")
    table.add_column("components", overflow="fold")
    table.add_column("hooks", overflow="fold")
    for plugin in loaded:
        components = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in plugin.components.items())
        table.add_row(plugin.name, plugin.source, components or "-", "\n".join(plugin.hooks) or "-")
    Console().print(table)
    if not loaded:
        print("no plugins loaded: install one (entry point group 'vitkit'), name it in a recipe or use --plugin")
    return 0


def _new_plugin(args: argparse.Namespace) -> int:
    from vitkit.apps.scaffold import new_plugin

    root = new_plugin(args.name, args.attention)
    print(f"wrote {root}/: pyproject.toml, README.md, the module and a test; next: pip install -e {root}")
    return 0


COMMANDS = {
    "run": _run,
    "eval": _eval,
    "predict": _predict,
    "export": _export,
    "compare": _compare,
    "list": _list,
    "plugins": _plugins,
    "new-plugin": _new_plugin,
    "bench": _bench,
    "runs": _runs,
    "lr-find": _lr_find,
    "cache": _cache,
    "audit": _audit,
    "push": _push,
    "serve": _serve,
    "shards": _shards,
    "tune": _tune,
}


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
    except PeerLost as err:  # the surviving ranks of a multi-process run; torchrun may restart the group
        if os.environ.get("VITKIT_DEBUG"):
            raise
        print(f"vitkit: {err}", file=sys.stderr)
        return 1
    finally:
        from vitkit.plugin_loader import allow_entry_points

        allow_entry_points(True)  # --no-plugins held for this command; in-process callers start afresh
