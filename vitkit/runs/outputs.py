"""What a finished run writes into its directory: ``metrics.csv`` after each epoch, then ``summary.json``
(last: a directory with it is finished), ``model.safetensors``, the curves, the test report and
``report.html``; and where a new run directory goes."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from vitkit.engine import elastic
from vitkit.engine.console import print_summary
from vitkit.registry import split_spec
from vitkit.runs.checkpoint import atomic_write_text, save_checkpoint, save_safetensors

if TYPE_CHECKING:
    from pathlib import Path

    from vitkit.engine.run import Run
    from vitkit.evaluation.evaluate import Evaluation

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "ema_val_loss", "ema_val_acc", "lr", "time", "img_per_s",
    "train_size",
]  # fmt: skip


def calibration_summary(report: dict[str, Any], temperature: float) -> dict[str, Any]:
    """summary.json's calibration entries: the temperature and ECE before/after it on test (and val)."""
    out: dict[str, Any] = {"temperature": temperature}
    for split, calibration in (("test", report.get("calibration")), ("val", report.get("val_calibration"))):
        if calibration:
            out.update({f"{split}_ece": calibration["ece"], f"{split}_ece_calibrated": calibration["ece_calibrated"]})
    return out


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.csv``: one row per epoch so far (``METRIC_COLUMNS``)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(run_dir / "metrics.csv", text.getvalue())


def choose_thresholds(trainer: Any, run_dir: Path, val: Evaluation) -> None:
    """Multi-label: per-class thresholds from the best weights' val predictions, kept with the model
    (``model.safetensors`` and ``best.pt``) for ``vitkit eval`` and ``vitkit predict``."""
    from vitkit.evaluation.multilabel_report import choose_thresholds as choose
    from vitkit.runs.checkpoint import load_checkpoint

    trainer.thresholds = choose(val.probabilities, val.targets)
    best_path = run_dir / "checkpoints" / "best.pt"
    if trainer.dist.is_main and best_path.is_file():
        best = load_checkpoint(best_path)
        best["data"] = trainer.data_meta()
        save_checkpoint(best, best_path)


def calibrate(run_dir: Path, val: Evaluation) -> float:
    """Fit the temperature on the best weights' val logits and store it in ``checkpoints/best.pt``
    (multi-label: 1.0, its per-class thresholds calibrate it)."""
    from vitkit.evaluation.calibration import fit_temperature
    from vitkit.runs.checkpoint import load_checkpoint

    if val.multi_label:
        return 1.0
    temperature = fit_temperature(val.logits, val.targets)
    best = run_dir / "checkpoints" / "best.pt"
    save_checkpoint({**load_checkpoint(best), "temperature": temperature}, best)
    return temperature


def write_finished_run(
    trainer: Any, run: Run, best_acc: float, best_epoch: int, wall: float, val: Evaluation,
    test: Evaluation | None, temperature: float,
) -> dict[str, Any]:  # fmt: skip
    """Write a finished run's outputs (rank 0) and call ``vitkit_on_run_end``; returns the summary."""
    run_dir = run.run_dir
    last = run.history[-1]
    summary = {
        "name": trainer.recipe.name,
        "model": trainer.recipe.model["name"],
        **({"test_acc": test.acc, "test_top5": test.top5, "test_loss": test.loss} if test else {}),
        "best_val_acc": best_acc,
        "best_epoch": best_epoch,
        "best_weights": trainer.best_weights,
        "epochs_run": last["epoch"],
        "final_train_loss": last["train_loss"],
        "final_val_acc": last["val_acc"],
        "params": trainer.params,
        "wall_time_s": wall,
        "train_img_per_s": sum(r["img_per_s"] for r in run.history) / len(run.history),
        "device": str(trainer.device),
        "threads": trainer.threads,
        "precision": trainer.precision,
        "seed": trainer.recipe.seed,
        "stop_reason": run.stop_reason,
        "skipped_steps": sum(r.get("skipped_steps", 0) for r in run.history),
        "bad_images": len(trainer.data.bad_images),
        "split_sizes": {"train": len(trainer.data.train), "val": len(trainer.data.val), "test": len(trainer.data.test)},
        "data": {"dataset": split_spec(trainer.recipe.data.dataset)[0], **trainer.data.seen()},
        "run_dir": str(run_dir),
    }
    from vitkit.audit.fast import run_audit

    audit = run_audit(trainer.data, run_dir)  # duplicates and leaks of a folder (audit.json), from the cache
    if audit is not None:
        summary["audit"] = audit
    if trainer.balance is not None:
        summary["balance"] = trainer.balance
    if trainer.ema is not None:
        summary["final_ema_val_acc"] = last["ema_val_acc"]
    if trainer.compile_trial is not None:
        summary["compile_auto"] = trainer.compile_trial.decision
    if trainer.dist.enabled:
        summary["world_size"] = trainer.dist.world_size
        summary["strategy"] = trainer.strategy
    save_safetensors(
        trainer.best_state,
        run_dir / "model.safetensors",
        {"model": trainer.recipe.model, "data": trainer.data_meta(), "plugins": trainer.recipe.plugins,
         "temperature": temperature},
    )  # fmt: skip
    if trainer.recipe.output.plots:
        from vitkit.viz import plot_curves

        plot_curves(run.history, run_dir, title=trainer.recipe.name, best=best_epoch)
    if test is not None:
        from vitkit.evaluation.mistakes import split_names
        from vitkit.evaluation.report import write_run_report

        report = write_run_report(
            run_dir, trainer.recipe.name, test, trainer.data.test, trainer.data.classes, run.history,
            trainer.recipe.output.plots, temperature, val, split_names(trainer.data, "test"), trainer.thresholds,
        )  # fmt: skip
        summary.update({f"test_macro_{key}": value for key, value in report["macro"].items()})
        if trainer.data.multi_label:  # test_acc: exact match at 0.5; these: at the thresholds chosen on val
            del summary["test_top5"]
            summary.update(multi_label=True, test_map=report["map"], test_exact_match=report["exact_match"])
        else:
            summary.update(calibration_summary(report, temperature))
    else:
        summary["test"] = "not scored by this run"
        summary["temperature"] = temperature
    from vitkit.evaluation.html_report import write_run_html

    write_run_html(run_dir, summary)  # report.html: the run on one self-contained page
    # last: a run directory with summary.json is finished (``--resume`` refuses it)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    elastic.unmark(run_dir)
    trainer.announced = False
    trainer.hooks.vitkit_on_run_end(run=run, summary=summary)
    print_summary(summary)
    return summary
