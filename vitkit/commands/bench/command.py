"""``vitkit bench``: turn a model name or a recipe into a ``BenchSpec``, run it, print a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vitkit.errors import UserError


def _recipe_target(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """Model spec, data shape, batch, precision, compile and device from a recipe (data is not loaded)."""
    from vitkit.engine import build
    from vitkit.engine.autobatch import resolved_batch_size
    from vitkit.recipe import load_recipe

    recipe = load_recipe(path)
    spec = dict(recipe.model)
    for key in ("img_size", "patch_size"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    recipe.model = spec
    img_size = build.model_img_size(recipe)
    dataset = build.build_dataset(recipe, img_size)  # class attributes describe it without loading
    return {
        "name": recipe.name,
        "model": build.build_model(recipe, len(dataset.classes), dataset.in_chans, pretrained=False),
        "img_size": img_size,
        "batch_size": resolved_batch_size(recipe),  # "auto": the off-GPU default; --batch-size to set one
        "precision": recipe.train.precision,
        "compile": recipe.train.compile,
        "device": recipe.train.device,
    }


def _model_target(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from vitkit.models import create_model

    overrides = {key: getattr(args, key) for key in ("img_size", "patch_size") if getattr(args, key) is not None}
    model = create_model(name, **overrides)
    return {"name": name, "model": model, "img_size": getattr(model, "img_size", 224)}


def spec_from_args(args: argparse.Namespace) -> Any:
    """The ``BenchSpec`` a ``vitkit bench`` command line asks for, on its device."""
    from vitkit.commands.bench.measure import BenchSpec
    from vitkit.engine.device import select_device
    from vitkit.engine.efficiency import resolve_precision

    target = args.target
    is_recipe = target.endswith(".toml") or Path(target).is_file()
    if is_recipe and not Path(target).is_file():
        raise UserError(f"recipe file not found: {target}")
    found = _recipe_target(target, args) if is_recipe else _model_target(target, args)
    try:
        device = select_device(args.device or found.get("device", "auto"))
    except UserError as err:
        raise UserError(f"--device: {err}") from None
    asked = args.precision or found.get("precision", "auto")
    model = found["model"].to(device)
    in_chans = getattr(model, "in_chans", 3)
    precision, why = "both", None
    if asked != "both":  # as a run resolves it: auto on CPU looks at the model's work per image
        precision, why = resolve_precision(asked, device, model, in_chans, found["img_size"])
    modes = ("train",) if args.train else ("infer",) if args.infer else ("train", "infer")
    batch = args.batch_size or found.get("batch_size") or 64
    return BenchSpec(
        model=model,
        name=found["name"],
        img_size=found["img_size"],
        in_chans=in_chans,
        num_classes=getattr(model, "num_classes", 1000),
        batch_size=batch,
        precision=precision,
        compile=args.compile if args.compile is not None else found.get("compile", False),
        run_steps=args.run_steps,
        modes=modes,
        vs_timm=args.vs == "timm",
        grad_checkpointing=args.grad_checkpointing,
        patch_drop_rate=args.patch_drop or 0.0,
        iters=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        auto_why=why,
    )


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


_COMPILED = {True: ", compiled", "auto": ", compile auto (rows: eager)"}


def print_report(result: dict[str, Any]) -> None:
    """A rich table: one row per (model, mode), then vitkit/timm ratios."""
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{result['model']}: batch {result['batch_size']}, input {'x'.join(map(str, result['input']))}, "
        f"{result['precision']}{_COMPILED.get(result['compile'], '')}, {result['device']}"
    )
    table = Table(title=title)
    for column in ("model", "mode", "img/s", "step ms", "spread", "TFLOP/s", "% of peak", "first step s", "peak MiB"):
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for row in result["rows"]:
        frac = row["peak_fraction"]
        table.add_row(
            row["model"],
            row["mode"],
            _fmt(row["img_per_s"]),
            _fmt(row["step_ms"], 2),
            f"{row['spread']:.0%}",
            _fmt(row["tflops"], 3),
            f"{frac:.1%}" if frac is not None else "-",
            _fmt(row["first_step_s"], 2),
            _fmt(row["peak_mem_mb"], 0),
        )
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and pipes: do not squeeze the table to 80 columns
        console.width = 132
    console.print(table)
    rss = result["process_peak_rss_mb"]
    console.print(
        f"params {result['params']:,}  ·  {result['gflops_per_img']:.3f} GFLOPs/img forward "
        f'= {result["gmacs_per_img"]:.3f} GMACs (papers\' "FLOPs"; training ~3x; TFLOP/s count a mult-add as 2)'
        + (f"  ·  process peak RSS {rss:,.0f} MiB" if rss is not None else "")
        + (f"  ·  peak {result['peak_tflops']} TFLOP/s" if result["peak_tflops"] else "")
    )
    auto = result.get("precision_auto")
    if auto:
        bought = ", ".join(f"{mode} {ratio:.2f}x" for mode, ratio in auto["speedup_vs_fp32"].items())
        console.print(auto["why"] + (f"; speed against fp32: {bought}" if bought else ""))
    compiled = result.get("compile_auto")
    if compiled:
        bought = compiled.get("speedup_vs_eager")
        console.print(
            f"train.compile auto: {compiled['choice'] or 'depends on the run'} ({compiled['why']})"
            + (f"; compiled training step speed against eager: {bought:.2f}x" if bought else "")
        )
    for mode, ratio in result["ratios"].items():
        colour = "green" if ratio >= 1.0 else "yellow"
        console.print(f"vitkit/timm {mode}: [{colour}]{ratio:.3f}[/]")
    base = result["rows"][0]["model"]
    for mode, found in result.get("vs_base", {}).items():
        for name, ratio in found.items():
            memory = f", peak memory {ratio['memory']:.2f}x" if ratio["memory"] is not None else ""
            console.print(f"{name} / {base} {mode}: step time {ratio['step_time']:.2f}x{memory}")


def bench_command(args: argparse.Namespace) -> int:
    """Run ``vitkit bench``; prints the table, or JSON with ``--json``."""
    import torch

    from vitkit.commands.bench.measure import run_bench

    for key in ("batch_size", "img_size", "patch_size", "steps", "repeats", "threads", "run_steps"):
        value = getattr(args, key)
        if value is not None and value < 1:
            raise UserError(f"--{key.replace('_', '-')}: expected a positive integer, got {value}")
    if args.warmup < 0:
        raise UserError(f"--warmup: expected an integer >= 0, got {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_bench(spec_from_args(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0
