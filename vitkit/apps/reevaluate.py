"""``vitkit eval``: score a finished run's best checkpoint on its test (or val) split again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from vitkit.data import build_loader
from vitkit.data.loaders import eval_transform
from vitkit.engine import build
from vitkit.engine.checkpoint import load_checkpoint
from vitkit.engine.console import console
from vitkit.engine.device import select_device, select_precision
from vitkit.engine.evaluate import Evaluation, evaluate
from vitkit.errors import UserError
from vitkit.plugin_loader import load_run_plugins
from vitkit.recipe import recipe_from_dict


def find_checkpoint(path: Path) -> Path:
    """A run directory's ``checkpoints/best.pt``, or the checkpoint file itself."""
    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        if not best.is_file():
            raise UserError(f"{path}: not a finished run directory (no checkpoints/best.pt)")
        return best
    if not path.exists():
        raise UserError(f"{path} does not exist (expected a run directory or a checkpoint file)")
    return path


def reevaluate(
    path: Path, split: str = "test", device: str = "auto", data_root: str | None = None
) -> tuple[Evaluation, dict[str, Any]]:
    """Rebuild the run's data and model from the checkpoint's recipe and evaluate ``split``.

    ``data_root`` replaces the recipe's ``data.root`` (a dataset that moved)."""
    ckpt_path = find_checkpoint(path)
    state = load_checkpoint(ckpt_path)
    if "recipe" not in state or "model" not in state:
        raise UserError(f"{ckpt_path}: not a vitkit checkpoint (no recipe or model in it)")
    if data_root is not None:
        state["recipe"]["data"]["root"] = data_root
    recipe = recipe_from_dict(state["recipe"], source=ckpt_path)
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None
    recipe.model.pop("checkpoint_path", None)  # the run's starting weights; its own replace them
    load_run_plugins(recipe.plugins, ckpt_path)  # its components
    meta = state["data"]
    dev = select_device(device)
    try:  # the run's own precision, so the numbers match its summary.json
        precision = select_precision(recipe.train.precision, dev)
    except UserError:  # an fp16 run evaluated off GPU
        precision = select_precision("auto", dev)
    data = build.load_dataset(recipe, meta["img_size"], run_dir=run_dir, only=(split,))
    model = build.build_model(recipe, len(meta["classes"]), meta["in_chans"], pretrained=False)
    model.load_state_dict(state["model"])
    model.to(dev)
    transform = eval_transform(meta)  # the evaluation view of training, eval and predict
    from vitkit.engine.autobatch import resolved_batch_size

    batch = recipe.data.eval_batch_size or 4 * resolved_batch_size(recipe, state.get("batch_size"))
    loader = build_loader(getattr(data, split), batch, transform, dev, False, recipe.data.num_workers)
    result = evaluate(model, loader, dev, precision)
    report = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "epoch": state.get("epoch"),
        f"{split}_acc": result.acc,
        f"{split}_top5": result.top5,
        f"{split}_loss": result.loss,
        "count": result.count,
        "precision": precision,
    }
    table = Table(
        title=f"{recipe.name}: {split} split, best checkpoint (epoch {state.get('epoch')})", show_header=False
    )
    for key in (f"{split}_acc", f"{split}_top5", f"{split}_loss", "count"):
        value = report[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if run_dir is not None and (run_dir / "summary.json").is_file():
        (run_dir / f"eval_{split}.json").write_text(json.dumps(report, indent=2) + "\n")
    from vitkit.engine.report import write_eval_report

    write_eval_report(
        run_dir or ckpt_path.parent, recipe.name, result, getattr(data, split), meta["classes"], split,
        meta.get("thresholds"),
    )  # fmt: skip
    return result, report
