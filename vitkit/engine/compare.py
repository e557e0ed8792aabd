"""``vitkit compare``: train recipe variants (or take finished runs), then rank them side by side.

Every number in the comparison is read from the runs' own files: ``summary.json`` and
``metrics.csv`` (written by the trainer) and ``profile.json`` (GFLOPs per image and inference
throughput, measured here once per run from its best checkpoint and saved next to them).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from vitkit.errors import UserError
from vitkit.recipe import load_recipe, parse_override

#: metric -> True when higher is better
RANK_METRICS = {
    "test_acc": True,
    "best_val_acc": True,
    "train_img_per_s": True,
    "infer_img_per_s": True,
    "params": False,
    "gflops": False,
    "wall_time_s": False,
}


@dataclass
class Variant:
    """One entry of a comparison: a recipe to train (with its ``--vary`` values) or a finished run."""

    label: str
    source: Path
    overrides: list[str]
    run_dir: Path | None = None


def split_values(text: str) -> list[str]:
    """``"a,{x=1, y=2},[3,4]"`` -> ``["a", "{x=1, y=2}", "[3,4]"]``: commas split only outside brackets/quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def parse_vary(texts: list[str]) -> list[tuple[str, list[str]]]:
    """``--vary key=v1,v2`` options -> ``[(key, [v1, v2]), ...]``; values stay TOML text."""
    axes = []
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or not key.strip() or not split_values(values):
            raise UserError(f"--vary {text!r}: expected KEY.PATH=V1,V2,..., e.g. --vary model.attention=softmax,linear")
        parse_override(f"{key}={split_values(values)[0]}")  # checks the key path
        axes.append((key.strip(), split_values(values)))
    if len({key for key, _ in axes}) < len(axes):
        raise UserError("--vary: each key may be varied once (give all its values after one =)")
    return axes


def plan(sources: list[str], vary: list[str]) -> list[Variant]:
    """Recipes x cartesian product of the ``--vary`` axes, plus finished run directories as they are."""
    axes = parse_vary(vary)
    recipes = [Path(s) for s in sources if not Path(s).is_dir()]
    variants = []
    for source in map(Path, sources):
        if source.is_dir():
            if not (source / "summary.json").is_file():
                raise UserError(f"{source}: not a finished run directory (no summary.json)")
            variants.append(Variant(source.parent.name, source, [], run_dir=source))
            continue
        if source.suffix != ".toml" and not source.is_file():
            raise UserError(f"{source}: neither a recipe file nor a run directory")
        combos = itertools.product(*[[(key, value) for value in values] for key, values in axes])
        for combo in combos:
            label = ", ".join(f"{key.split('.')[-1]}={value}" for key, value in combo)
            if len(recipes) > 1 or not label:
                label = f"{source.stem} [{label}]" if label else source.stem
            variants.append(Variant(label, source, [f"{key}={value}" for key, value in combo]))
    if axes and not recipes:
        raise UserError("--vary changes recipes; no recipe file was given (only run directories)")
    return variants


def run_name(label: str) -> str:
    """A folder-safe name for a variant's runs."""
    plain = re.sub(r"[{}\"']", "", label)
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", plain).strip("_") or "variant"


def train_variant(
    variant: Variant, overrides: list[str], out_dir: Path, plugins: tuple[str, ...] = (), entry_points: bool = True
) -> Path:
    """Train one recipe variant into ``out_dir/<variant>/<time>/``; returns its run directory."""
    from vitkit.engine.trainer import Trainer
    from vitkit.plugin_loader import load_plugins

    extra = [f'output.dir="{out_dir.as_posix()}"', f'name="{run_name(variant.label)}"']
    try:
        recipe = load_recipe(variant.source, [*overrides, *variant.overrides, *extra])
        manager, _ = load_plugins(recipe.plugins, plugins, entry_points=entry_points, recipe_file=recipe.where())
        summary = Trainer(recipe, plugins=manager).fit()
    except UserError as err:
        raise UserError(f"compare variant {variant.label!r}: {err}") from None
    return Path(summary["run_dir"])


def profile_run(run_dir: Path, min_seconds: float = 0.5) -> dict[str, Any]:
    """GFLOPs per image and inference images/s of a run's best model, cached in ``profile.json``.

    Throughput is timed on one fixed batch (the run's evaluation batch size) of its input shape,
    on the device and precision the run used, after warm-up: the model's speed, not the loader's.
    """
    path = run_dir / "profile.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch

    from vitkit.engine import build
    from vitkit.engine.autobatch import resolved_batch_size
    from vitkit.engine.checkpoint import load_checkpoint
    from vitkit.engine.device import autocast, select_device, select_precision
    from vitkit.engine.summary import count_flops
    from vitkit.recipe import recipe_from_dict

    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    recipe = recipe_from_dict(state["recipe"], source=run_dir / "recipe.toml")
    recipe.model.pop("checkpoint_path", None)  # the trained weights replace any starting point
    meta = state["data"]
    device = select_device(recipe.train.device)
    precision = select_precision(recipe.train.precision, device)
    model = build.build_model(recipe, len(meta["classes"]), meta["in_chans"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
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
        "infer_img_per_s": count * batch / elapsed,
        "infer_batch": batch,
        "device": str(device),
        "precision": precision,
    }
    path.write_text(json.dumps(profile, indent=2) + "\n")
    return profile


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """A run's ``metrics.csv`` rows as numbers."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def collect(variant: Variant) -> dict[str, Any]:
    """The comparison row of a finished run, read from its files."""
    run_dir = variant.run_dir
    assert run_dir is not None
    summary = json.loads((run_dir / "summary.json").read_text())
    profile = profile_run(run_dir)
    return {
        "name": variant.label,
        "model": summary["model"],
        "params": summary["params"],
        "gflops": profile["gflops"],
        "train_img_per_s": summary["train_img_per_s"],
        "infer_img_per_s": profile["infer_img_per_s"],
        "best_val_acc": summary["best_val_acc"],
        "test_acc": summary["test_acc"],
        "wall_time_s": summary["wall_time_s"],
        "epochs": summary["epochs_run"],
        "device": summary["device"],
        "run_dir": str(run_dir),
    }


def rank(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Rows best first by ``metric``, each with its ``rank``."""
    higher = RANK_METRICS[metric]
    ordered = sorted(rows, key=lambda r: -r[metric] if higher else r[metric])
    return [{"rank": i, **row} for i, row in enumerate(ordered, start=1)]


def compare(
    sources: list[str],
    vary: list[str] | None = None,
    overrides: list[str] | None = None,
    rank_by: str = "test_acc",
    out: str | Path | None = None,
    plugins: list[str] | tuple[str, ...] = (),
    entry_points: bool = True,
) -> Path:
    """Train each variant (or read finished runs), rank them, write the report; returns its folder.

    ``plugins`` (modules or ``.py`` paths) and entry-point plugins are loaded for every variant."""
    from vitkit.engine.compare_report import write_report

    if rank_by not in RANK_METRICS:
        raise UserError(f"--rank-by {rank_by!r}: expected one of {', '.join(RANK_METRICS)}")
    variants = plan(sources, vary or [])
    if out is None:
        recipes = [v.source for v in variants if v.run_dir is None]
        parent = Path(load_recipe(recipes[0], overrides or []).output.dir) if recipes else Path("runs")
        out = parent / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create {out_dir}: {err.strerror}") from None
    for variant in variants:
        if variant.run_dir is None:
            variant.run_dir = train_variant(variant, overrides or [], out_dir, tuple(plugins), entry_points)
    rows = rank([collect(v) for v in variants], rank_by)
    histories = {row["name"]: read_metrics(Path(row["run_dir"])) for row in rows}
    write_report(rows, histories, out_dir, rank_by, {"sources": sources, "vary": vary or [], "set": overrides or []})
    return out_dir
