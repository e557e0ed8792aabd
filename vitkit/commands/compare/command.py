"""``vitkit compare``: train recipe variants (or take finished runs), then rank them side by side.

Every number in the comparison is read from the runs' own files: ``summary.json`` and
``metrics.csv`` (written by the trainer) and ``profile.json`` (GFLOPs per image and inference
throughput, measured here once per run from its best checkpoint and saved next to them).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from vitkit.commands.compare.plan import (
    ACCURACIES,
    METRICS,
    RANK_DEFAULT,
    Repeat,
    Variant,
    add_repeats,
    check_rank_metric,
    plan,
    rank,
    run_overrides,
)
from vitkit.errors import UserError
from vitkit.recipe import load_recipe
from vitkit.runs.layout import read_metrics


def train_variant(
    variant: Variant,
    overrides: list[str],
    out_dir: Path,
    plugins: tuple[str, ...] = (),
    entry_points: bool = True,
    repeat: Repeat | None = None,
) -> Path:
    """Train one recipe variant (one repeat) into ``out_dir/<name>/<time>/``; returns its run directory."""
    from vitkit.engine.trainer import Trainer
    from vitkit.plugin_loader import load_plugins, record_cli_plugins

    repeat = repeat or variant.repeats[0]
    try:
        recipe = load_recipe(variant.source, run_overrides(variant, repeat, overrides, out_dir))
        if not recipe.data.split_file and SPLIT_FILES.get(_data_key(recipe)):  # score every variant on the same files
            recipe.data.split_file = SPLIT_FILES[_data_key(recipe)]
        manager, _ = load_plugins(recipe.plugins, plugins, entry_points=entry_points, recipe_file=recipe.where())
        record_cli_plugins(recipe, plugins)  # saved with the run, for predict/export/compare of it later
        summary = Trainer(recipe, plugins=manager).fit()
    except UserError as err:
        raise UserError(f"compare variant {variant.label!r}{_tag(repeat)}: {err}") from None
    run_dir = Path(summary["run_dir"])
    if (run_dir / "split.json").is_file():
        SPLIT_FILES.setdefault(_data_key(recipe), str(run_dir / "split.json"))
    return run_dir


SPLIT_FILES: dict[tuple, str] = {}  # (dataset, root, labels, split keys, fold) -> the first variant's split.json


def _data_key(recipe: Any) -> tuple:
    d = recipe.data
    return (
        str(d.dataset),
        str(Path(d.root).resolve()),
        d.labels,
        d.val_fraction,
        d.test_fraction,
        d.split_seed,
        d.fold,
    )


def _tag(repeat: Repeat) -> str:
    return f" ({repeat.tag})" if repeat.tag else ""


def profile_run(run_dir: Path, min_seconds: float = 0.5) -> dict[str, Any]:
    """GFLOPs per image and inference images/s of a run's best model, cached in ``profile.json``.

    Throughput is timed on one fixed batch (the run's evaluation batch size) of its input shape,
    on the device and precision the run used, after warm-up: the model's speed, not the loader's.
    """
    path = run_dir / "profile.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if "gmacs" in cached:  # older profiles counted no attention matmuls on CPU: measure again
            return cached
    import torch

    from vitkit.engine.autobatch import resolved_batch_size
    from vitkit.engine.device import autocast, select_device
    from vitkit.engine.efficiency import resolve_precision
    from vitkit.engine.flops import count_flops, gmacs
    from vitkit.runs.finished import open_run

    run = open_run(run_dir)  # its best weights, recipe and data metadata (and the plugins it names)
    recipe, meta, state = run.recipe(), run.data, run.state
    device = select_device(recipe.train.device)
    model = run.model.to(device).eval()
    precision, _ = resolve_precision(recipe.train.precision, device, model, meta["in_chans"], meta["img_size"])
    flops = count_flops(model, meta["in_chans"], meta["img_size"])
    batch = recipe.data.eval_batch_size or 4 * resolved_batch_size(recipe, state.get("batch_size"))
    images = torch.randn(batch, meta["in_chans"], meta["img_size"], meta["img_size"], device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.no_grad(), autocast(device, precision):
        for _ in range(2):
            model(images)
        sync()
        count, start = 0, time.perf_counter()
        while count < 3 or (time.perf_counter() - start < min_seconds and count < 200):
            model(images)
            sync()
            count += 1
        elapsed = time.perf_counter() - start
    profile = {
        "gflops": flops / 1e9,
        "gmacs": gmacs(flops),
        "infer_img_per_s": count * batch / elapsed,
        "infer_batch": batch,
        "device": str(device),
        "precision": precision,
    }
    path.write_text(json.dumps(profile, indent=2) + "\n")
    return profile


def run_row(run_dir: Path) -> dict[str, Any]:
    """The numbers of one finished run, read from its files."""
    summary = json.loads((run_dir / "summary.json").read_text())
    profile = profile_run(run_dir)
    sizes = summary.get("split_sizes", {})
    return {
        "model": summary["model"],
        "params": summary["params"],
        "gflops": profile["gflops"],
        "gmacs": profile["gmacs"],
        "train_img_per_s": summary["train_img_per_s"],
        "infer_img_per_s": profile["infer_img_per_s"],
        "best_val_acc": summary["best_val_acc"],
        "test_acc": summary["test_acc"],
        "val_images": sizes.get("val"),
        "test_images": sizes.get("test"),
        "wall_time_s": summary["wall_time_s"],
        "epochs": summary["epochs_run"],
        "device": summary["device"],
        "seed": summary.get("seed"),
        "run_dir": str(run_dir),
    }


def collect(variant: Variant) -> dict[str, Any]:
    """The comparison row of a variant: per metric the mean over its runs, for accuracies also the
    sample sd and the 95% interval, Student-t on the logit scale so that it stays inside [0, 1]
    (``<metric>_sd``, ``_low``, ``_high``); each run's own row in ``runs``."""
    from vitkit.stats import describe, describe_accuracy

    runs = []
    for repeat in variant.repeats:
        assert repeat.run_dir is not None
        runs.append({"repeat": repeat.tag, **run_row(repeat.run_dir)})
    first = runs[0]
    row: dict[str, Any] = {"name": variant.label, "model": first["model"], "repeats": len(runs)}
    for metric in METRICS:
        values = [run[metric] for run in runs]
        split = ACCURACIES.get(metric)
        summary = describe_accuracy(values, [run[f"{split}_images"] for run in runs]) if split else describe(values)
        same = len(set(values)) == 1  # one run, or a size (params, FLOPs) every repeat shares
        row[metric] = values[0] if same else summary.mean
        if split:
            row.update({f"{metric}_sd": summary.sd, f"{metric}_low": summary.low, f"{metric}_high": summary.high})
    epochs = [run["epochs"] for run in runs]
    row["epochs"] = epochs[0] if len(set(epochs)) == 1 else describe(epochs).mean  # early stopping varies it
    row["device"] = first["device"]
    row["run_dir"] = ";".join(run["run_dir"] for run in runs)
    row["runs"] = runs
    return row


def train_all(
    variants: list[Variant],
    overrides: list[str],
    out_dir: Path,
    plugins: tuple[str, ...],
    entry_points: bool,
    jobs: int,
) -> None:
    """Train every repeat of every recipe variant: in this process, or ``jobs`` processes at a time."""
    todo = [(v, r) for v in variants for r in v.repeats if r.run_dir is None]
    if jobs > 1 and len(todo) > 1:
        from vitkit.commands.compare.jobs import run_parallel

        run_parallel(todo, overrides, out_dir, plugins, entry_points, jobs)
        return
    for variant, repeat in todo:
        repeat.run_dir = train_variant(variant, overrides, out_dir, plugins, entry_points, repeat)


def compare(
    sources: list[str],
    vary: list[str] | None = None,
    overrides: list[str] | None = None,
    rank_by: str | None = None,
    out: str | Path | None = None,
    plugins: list[str] | tuple[str, ...] = (),
    entry_points: bool = True,
    seeds: int | None = None,
    folds: int | None = None,
    jobs: int = 1,
    tune: int | None = None,
    space: list[str] | tuple[str, ...] = (),
) -> Path:
    """Train each variant (or read finished runs), rank them, write the report; returns its folder.

    ``seeds``/``folds`` repeat every recipe variant (matched pairs); ``jobs`` trains that many runs
    at once. ``tune``: first tune every recipe variant with that many trials over ``space`` (the same
    budget each, ``vitkit tune``), then train its best values. ``plugins`` (modules or ``.py`` paths)
    and entry-point plugins are loaded for every run. Variants are ranked on ``rank_by``: validation
    accuracy (``RANK_DEFAULT``) unless given, never test."""
    from vitkit.commands.compare.report import write_report

    rank_by = rank_by or RANK_DEFAULT
    check_rank_metric(rank_by)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: expected a positive number of processes")
    variants = plan(sources, vary or [])
    SPLIT_FILES.clear()
    recipes = [v.source for v in variants if v.run_dir is None]
    first = load_recipe(recipes[0], overrides or []) if recipes else None
    add_repeats(variants, seeds, folds, first.seed if first else 0)
    if out is None:
        parent = Path(first.output.dir) if first else Path("runs")
        out = parent / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create {out_dir}: {err.strerror}") from None
    start = time.perf_counter()
    tuned = None
    if tune is not None:
        from vitkit.commands.compare.tune import tune_variants

        tuned = tune_variants(variants, overrides or [], out_dir, tune, list(space), tuple(plugins), entry_points, jobs)
    elif space:
        raise UserError("--space: give --tune N too (the trials each variant gets)")
    train_all(variants, overrides or [], out_dir, tuple(plugins), entry_points, jobs)
    rows = rank([collect(v) for v in variants], rank_by)
    for row in rows:
        if tuned and row["name"] in tuned:
            row["tuned"] = tuned[row["name"]]
    histories = {row["name"]: [read_metrics(Path(run["run_dir"])) for run in row["runs"]] for row in rows}
    command = {
        "sources": sources,
        "vary": vary or [],
        "set": overrides or [],
        "seeds": seeds,
        "folds": folds,
        "jobs": jobs,
        **({"tune": tune, "space": list(space)} if tune is not None else {}),
        "wall_time_s": time.perf_counter() - start,
    }
    write_report(rows, histories, out_dir, rank_by, command)
    return out_dir
