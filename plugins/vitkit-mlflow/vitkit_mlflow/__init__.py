"""A hooks-only vitkit plugin: every run as an MLflow run.

Opt-in: it logs only when MLflow's own ``MLFLOW_TRACKING_URI`` is set. On one machine use a
SQLite store, ``export MLFLOW_TRACKING_URI=sqlite:///mlflow.db``; a team points it at its
tracking server (``http://mlflow.example:5000``). The experiment is ``MLFLOW_EXPERIMENT_NAME``,
else the recipe's name. Each run gets:

- params: the resolved recipe, flattened (``optimizer.lr``, ``model.depth``, ...);
- metrics: every numeric metric of each epoch (``train_loss``, ``val_acc``, ``lr``, ...) with
  ``step`` = epoch, and at the end ``test_acc``, ``test_top5``, ``test_loss``, ``best_val_acc``,
  ``wall_time_s``;
- artifacts: ``summary.json``, ``metrics.csv``, ``recipe.toml``, ``report_test.json``, the plots,
  and the best weights as ``model/model.safetensors`` (load with ``vitkit.load``);
- tags: ``vitkit.run_dir``, ``vitkit.model``, ``vitkit.dataset``.

A run that stops on an error ends ``FAILED`` (its message in the tag ``vitkit.error``), one stopped
with Ctrl-C ``KILLED``; a process killed outright stays ``RUNNING``. The MLflow run id is kept in
``<run dir>/mlflow_run.json``, so ``vitkit run --resume`` continues the same MLflow run (``RUNNING``
again). Rank 0 only.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import vitkit

RUN_FILE = "mlflow_run.json"
ARTIFACTS = ("summary.json", "metrics.csv", "recipe.toml", "report_test.json", "report.html")
SUMMARY_METRICS = ("test_acc", "test_top5", "test_loss", "best_val_acc", "wall_time_s", "train_img_per_s")
MAX_PARAM = 6000  # MLflow's limit on a param value
ERROR_TAG, MAX_TAG = "vitkit.error", 5000  # the error a failed run stopped on; MLflow's limit on a tag value
_runs: dict[Path, tuple[Any, str]] = {}  # run directory -> (MlflowClient, MLflow run id)
_pending: dict[str, list[Any]] = {}  # MLflow run id -> metrics batches being written in the background


def tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI``, or ``None`` (then the plugin does nothing)."""
    return os.environ.get("MLFLOW_TRACKING_URI", "").strip() or None


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": "1", "c": "[1, 2]"}``, as MLflow params."""
    if isinstance(data, dict):
        flat: dict[str, str] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    text = json.dumps(data) if isinstance(data, (list, tuple, bool)) or data is None else str(data)
    return {prefix: text[:MAX_PARAM]}


def _numbers(values: dict[str, Any], keys: Any = None) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in values.items()
        if (keys is None or key in keys) and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _open_run(client: Any, run: Any, uri: str) -> str:
    """The MLflow run id of this vitkit run: the one in ``mlflow_run.json`` (``--resume``), else a new one."""
    run_dir = Path(run.run_dir)
    record_path = run_dir / RUN_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("tracking_uri") == uri:
            try:
                client.get_run(record["run_id"])
            except Exception:  # deleted from the store: start a new one
                pass
            else:
                client.update_run(record["run_id"], status="RUNNING")
                with contextlib.suppress(Exception):  # the error of an earlier attempt, if it failed
                    client.delete_tag(record["run_id"], ERROR_TAG)
                return record["run_id"]
    experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or run.recipe.name
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    recipe = run.recipe.to_dict()
    tags = {
        "vitkit.run_dir": str(run_dir.resolve()),
        "vitkit.model": str(recipe.get("model", {}).get("name", "")),
        "vitkit.dataset": str(recipe.get("data", {}).get("dataset", "")),
    }
    created = client.create_run(experiment_id, run_name=f"{run.recipe.name}/{run_dir.name}", tags=tags)
    run_id = created.info.run_id
    from mlflow.entities import Param

    params = [Param(key, value) for key, value in flatten(recipe).items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    record = {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return run_id


@vitkit.hookimpl
def vitkit_on_run_start(run: Any) -> None:
    """Start (or, after ``--resume``, continue) the MLflow run and log the recipe as params."""
    uri = tracking_uri()
    if uri is None or int(os.environ.get("RANK", "0")) != 0:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    _runs[Path(run.run_dir)] = (client, _open_run(client, run, uri))


def _log_metrics(client: Any, run_id: str, values: dict[str, float], step: int, wait: bool = True) -> None:
    """One batch of metrics; ``wait=False`` hands it to MLflow's background logging thread (an epoch's
    SQLite transaction took 40-100 ms in the training loop), which ``_finish`` waits for."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value in values.items()]
    operations = client.log_batch(run_id, metrics=metrics, synchronous=wait)
    if operations is not None:
        _pending.setdefault(run_id, []).append(operations)


def _finish(client: Any, run_id: str, status: str) -> None:
    """Wait for the epochs' metrics still being written in the background, then end the run."""
    for operations in _pending.pop(run_id, []):
        operations.wait()
    client.set_terminated(run_id, status)


@vitkit.hookimpl
def vitkit_on_epoch_end(run: Any, epoch: int, metrics: dict[str, Any]) -> None:
    """Every numeric metric of the epoch, with ``step`` = epoch."""
    opened = _runs.get(Path(run.run_dir))
    if opened is not None:
        client, run_id = opened
        _log_metrics(client, run_id, _numbers({k: v for k, v in metrics.items() if k != "epoch"}), epoch, wait=False)


@vitkit.hookimpl
def vitkit_on_run_end(run: Any, summary: dict[str, Any]) -> None:
    """Test metrics, the run directory's summary, metrics, plots and best weights; the run ends FINISHED."""
    opened = _runs.pop(Path(run.run_dir), None)
    if opened is None:
        return
    client, run_id = opened
    run_dir = Path(run.run_dir)
    _log_metrics(client, run_id, _numbers(summary, SUMMARY_METRICS), int(summary.get("epochs_run", 0)))
    for name in ARTIFACTS:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for plot in sorted(run_dir.glob("*.png")):
        client.log_artifact(run_id, str(plot), "plots")
    if (run_dir / "model.safetensors").is_file():
        client.log_artifact(run_id, str(run_dir / "model.safetensors"), "model")
    _finish(client, run_id, "FINISHED")


@vitkit.hookimpl(optionalhook=True)  # vitkit versions without this hook still load the plugin
def vitkit_on_run_failed(run: Any, error: BaseException, interrupted: bool) -> None:
    """The run ends ``KILLED`` after Ctrl-C, else ``FAILED`` with the error in the tag ``vitkit.error``."""
    opened = _runs.pop(Path(run.run_dir), None)
    if opened is None:
        return
    client, run_id = opened
    if not interrupted:
        message = " ".join(str(error).split())
        client.set_tag(
            run_id, ERROR_TAG, (f"{type(error).__name__}: {message}" if message else type(error).__name__)[:MAX_TAG]
        )
    _finish(client, run_id, "KILLED" if interrupted else "FAILED")
