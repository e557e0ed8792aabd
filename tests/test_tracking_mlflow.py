"""The MLflow plugin (plugins/vitkit-mlflow, installed as CI installs plugins/*): a digits run killed
after epoch 1 and resumed is one MLflow run, read back with ``mlflow.MlflowClient`` from a temporary
SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, TINY_DIGITS, installed

pytestmark = pytest.mark.skipif(not installed("vitkit-mlflow"), reason="plugins/vitkit-mlflow not installed")


@pytest.mark.slow
def test_two_digits_epochs_killed_and_resumed_are_one_mlflow_run(tmp_path, cli, write_recipe, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns, lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    tiny = TINY_DIGITS.replace("depth = 2", "depth = 1").replace("batch_size = 32", "batch_size = 128")
    recipe = write_recipe(tiny + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    # killed by the test hook while writing the 3rd last.pt (epoch 2): epoch 1 is logged and saved
    killed = subprocess.run(
        [sys.executable, "-m", "vitkit", "run", str(recipe)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
             "VITKIT_TEST_KILL_AFTER_TEMP": "last.pt:3"},
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    record = json.loads((run_dir / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(record["run_id"]).info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(record["run_id"], "val_acc")] == [1]

    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err
    assert "warning: plugin" not in err
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] == record["run_id"]
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == record["run_id"] and found.info.status == "FINISHED"
    assert found.data.tags["vitkit.run_dir"] == str(run_dir.resolve())

    # params: the flattened resolved recipe
    params = found.data.params
    assert params["model.name"] == "vit_nano_patch4_16" and float(params["optimizer.lr"]) == 3e-3
    assert params["train.epochs"] == "2" and params["data.dataset"] == "digits"

    # metrics per epoch, equal to metrics.csv; test metrics equal summary.json
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
    for column in ("train_loss", "val_acc", "lr"):
        history = client.get_metric_history(found.info.run_id, column)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx([float(r[header.index(column)]) for r in rows], rel=1e-4)
    assert found.data.metrics["test_acc"] == pytest.approx(summary["test_acc"])

    # artifacts: summary, metrics, plots, the best weights
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "metrics.csv", "recipe.toml", "plots", "model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(found.info.run_id, "plots")}
    assert {"plots/loss.png", "plots/accuracy.png", "plots/confusion.png"} <= plots
    local = client.download_artifacts(found.info.run_id, "model/model.safetensors", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (run_dir / "model.safetensors").read_bytes()


def test_off_without_tracking_uri(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import vitkit_mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    vitkit_mlflow.vitkit_on_run_start(run=SimpleNamespace(run_dir=tmp_path, recipe=None))
    assert list(tmp_path.iterdir()) == []
    assert vitkit_mlflow.flatten({"a": {"b": 1, "c": [1, "x"]}, "d": None, "e": True}) == {
        "a.b": "1",
        "a.c": '[1, "x"]',
        "d": "null",
        "e": "true",
    }
