"""``vitkit eval``: score a finished run's best checkpoint on its test (or val) split again."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vitkit.commands import Command
from vitkit.commands.common import load_plugins
from vitkit.errors import UserError

if TYPE_CHECKING:
    from vitkit.evaluation.evaluate import Evaluation


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
    path: Path, split: str = "test", device: str = "auto", data_root: str | None = None, tta: str | None = None
) -> tuple[Evaluation, dict[str, Any]]:
    """Open the run (``runs.finished.open_run``), evaluate ``split`` of its data, write the report.

    ``data_root`` replaces the recipe's ``data.root`` (a dataset that moved). Probabilities are calibrated
    by the run's temperature (1 for runs without one), as ``predict`` reports them; the report keeps
    ``{split}_loss`` uncalibrated (as training logged it) beside ``{split}_loss_calibrated``. ``tta``
    (``evaluation.tta``) also scores the mean probabilities over test-time augmented views, reported beside
    the plain accuracy."""
    from rich.table import Table

    from vitkit.data import build_loader
    from vitkit.data.loaders import eval_transform
    from vitkit.engine.console import console
    from vitkit.engine.device import select_device
    from vitkit.engine.efficiency import resolve_precision
    from vitkit.evaluation.calibration import calibration_report, expected_calibration_error
    from vitkit.evaluation.evaluate import evaluate
    from vitkit.evaluation.mistakes import split_names
    from vitkit.evaluation.tta import TTAModel, TTAViews, check_tta
    from vitkit.runs.finished import open_run

    check_tta(tta)
    ckpt_path = find_checkpoint(path)
    run = open_run(ckpt_path)  # the model, its weights and temperature, the data metadata, the recipe
    recipe, meta, state = run.recipe(data_root), run.data, run.state
    run_dir = run.run_dir if ckpt_path.parent.name == "checkpoints" else None
    data = run.load_data(only=(split,), data_root=data_root)  # the files of its split.json
    dev = select_device(device)
    model = run.model.to(dev)
    try:  # the run's own precision, so the numbers match its summary.json
        precision, _ = resolve_precision(recipe.train.precision, dev, model, meta["in_chans"], meta["img_size"])
    except UserError:  # an fp16 run evaluated off GPU
        precision, _ = resolve_precision("auto", dev, model, meta["in_chans"], meta["img_size"])
    transform = eval_transform(meta)  # the evaluation view of training, eval and predict
    from vitkit.engine.autobatch import resolved_batch_size

    batch = recipe.data.eval_batch_size or 4 * resolved_batch_size(recipe, state.get("batch_size"))
    loader = build_loader(getattr(data, split), batch, transform, dev, False, recipe.data.num_workers)
    result = evaluate(model, loader, dev, precision)
    temperature = run.temperature
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
    if not result.multi_label:  # multi-label: the per-class thresholds (meta) are its calibration
        calibration = calibration_report(result.logits, result.targets, temperature)
        report.update(
            {"temperature": temperature, f"{split}_ece": calibration["ece"],
             f"{split}_ece_calibrated": calibration["ece_calibrated"],
             f"{split}_loss_calibrated": calibration["nll_calibrated"]}
        )  # fmt: skip
    extra = {}
    if tta and result.multi_label:
        raise UserError("vitkit eval --tta: test-time augmentation is for single-label runs")
    if tta:
        tta_loader = build_loader(
            getattr(data, split), batch, TTAViews(transform, tta), dev, False, recipe.data.num_workers
        )
        augmented = evaluate(TTAModel(model, temperature), tta_loader, dev, precision)  # probabilities: calibrated
        ece = expected_calibration_error(augmented.probabilities, augmented.targets)
        report.update({"tta": tta, f"{split}_acc_tta": augmented.acc, f"{split}_ece_tta": ece})
        extra["tta"] = {"mode": tta, "acc": augmented.acc, "acc_without": result.acc, "ece": ece}
    with_tta = f", test-time augmentation: {tta}" if tta else ""
    table = Table(
        title=f"{recipe.name}: {split} split, best checkpoint (epoch {state.get('epoch')}){with_tta}",
        show_header=False,
    )
    keys = [f"{split}_acc", *[f"{split}_acc_tta"] * bool(tta), f"{split}_top5", f"{split}_loss", "count"]
    keys += [
        "temperature",
        f"{split}_loss_calibrated",
        f"{split}_ece",
        f"{split}_ece_calibrated",
        *[f"{split}_ece_tta"] * bool(tta),
    ]
    for key in (key for key in keys if key in report):
        value = report[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if run_dir is not None and (run_dir / "summary.json").is_file():
        (run_dir / f"eval_{split}.json").write_text(json.dumps(report, indent=2) + "\n")
    from vitkit.evaluation.report import write_eval_report

    out_dir = run_dir or ckpt_path.parent
    names = split_names(data, split)
    write_eval_report(
        out_dir,
        recipe.name,
        result,
        getattr(data, split),
        meta["classes"],
        split,
        temperature,
        extra,
        names,
        meta.get("thresholds"),
    )
    if run_dir is not None and (run_dir / "summary.json").is_file():  # report.html shows what eval wrote
        from vitkit.evaluation.html_report import write_run_html

        write_run_html(run_dir, json.loads((run_dir / "summary.json").read_text()))
    return result.with_temperature(temperature), report  # the probabilities predict reports


def add_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("run_dir", help="run directory (runs/<name>/<time>/) or checkpoint file")
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--data", metavar="ROOT", help="read the dataset from ROOT instead of the recipe's data.root")
    ev.add_argument("--tta", choices=("flip", "crops"), help="also score test-time augmentation (mean probabilities)")


def main(args: argparse.Namespace) -> int:
    load_plugins(args)  # the run's own recipe plugins are loaded from its saved recipe
    reevaluate(Path(args.run_dir), args.split, data_root=args.data, tta=args.tta)
    return 0


COMMANDS = (
    Command(
        "eval",
        "re-evaluate a finished run's best checkpoint: accuracy, per-class table, confusion matrix",
        add_arguments,
        main,
    ),
)
