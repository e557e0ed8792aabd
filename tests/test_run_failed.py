"""``vitkit_on_run_failed``: a run that stops on an error or Ctrl-C after ``vitkit_on_run_start`` tells its
plugins once; MLflow marks it FAILED or KILLED, TensorBoard closes its writer, a hook that raises there is
reported and the run's own error still reaches the user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import TINY_DIGITS, installed

# records what vitkit_on_run_failed receives
RECORDING = """
import json

import vitkit


@vitkit.hookimpl
def vitkit_on_run_failed(run, error, interrupted):
    with open(run.run_dir / "failed_hook.jsonl", "a") as f:
        record = {"error": f"{type(error).__name__}: {error}", "interrupted": interrupted, "epochs": len(run.history)}
        f.write(json.dumps(record) + "\\n")
"""

# a loss that turns NaN on its 3rd call: the run diverges at epoch 1, step 3
NAN_LOSS = """
import torch.nn.functional as F

import vitkit


@vitkit.register_loss("nan_on_call")
def nan_on_call(call: int = 3):
    calls = []

    def loss(logits, targets):
        calls.append(1)
        value = F.cross_entropy(logits, targets)
        return value * float("nan") if len(calls) == call else value

    return loss
"""

RAISING = """
import vitkit


@vitkit.hookimpl
def vitkit_on_run_failed(run):
    raise ConnectionError("tracking server unreachable")
"""

tracking = pytest.mark.skipif(
    not (installed("vitkit-mlflow") and installed("vitkit-tensorboard")), reason="tracking plugins not installed"
)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for this module's runs (creating MLflow's tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _plugins(tmp_path: Path, **sources: str) -> str:
    """A recipe's ``plugins = [...]`` line for the given modules, written into tmp_path."""
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source)
    return "plugins = [" + ", ".join(f'"{tmp_path / name}.py"' for name in sources) + "]\n"


def _run(tmp_path, cli, write_recipe, monkeypatch, mlflow_uri, loss: str = "cross_entropy") -> tuple:
    """``vitkit run`` of two tiny digits epochs with MLflow and TensorBoard on, RECORDING and RAISING as
    plugins (and NAN_LOSS); returns (exit code, stderr, run directory, what RECORDING's hook received)."""
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root, ./mlruns, lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", tmp_path.name)
    monkeypatch.setenv("VITKIT_TENSORBOARD", "1")
    monkeypatch.delenv("TENSORBOARD_LOGDIR", raising=False)
    plugins = _plugins(
        tmp_path, recording=RECORDING, raising=RAISING, **({"nan_loss": NAN_LOSS} if loss == "nan_on_call" else {})
    )
    text = TINY_DIGITS + f'[loss]\nname = "{loss}"\n[output]\ndir = "{tmp_path / "runs"}"\n'
    code, _, err = cli("run", write_recipe(plugins + text))
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    hook_file = run_dir / "failed_hook.jsonl"
    calls = [json.loads(line) for line in hook_file.read_text().splitlines()] if hook_file.exists() else []
    return code, err, run_dir, calls


def _mlflow_client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mlflow_run(uri: str, run_dir: Path):
    """The MLflow run of a vitkit run directory, read back from the store."""
    return _mlflow_client(uri).get_run(json.loads((run_dir / "mlflow_run.json").read_text())["run_id"])


def _remember_writers(monkeypatch) -> dict:
    """Every SummaryWriter the TensorBoard plugin opens, by run directory."""
    import vitkit_tensorboard

    opened: dict = {}

    class Remembering(dict):
        def __setitem__(self, key, value):
            opened[key] = value
            super().__setitem__(key, value)

    monkeypatch.setattr(vitkit_tensorboard, "_writers", Remembering())
    return opened


def _closed(writer) -> bool:
    return writer.all_writers is None  # what torch's SummaryWriter.close() leaves


def _logged_lr_steps(run_dir: Path) -> list[int]:
    """The ``step/lr`` steps in the run's event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars("step/lr")] if "step/lr" in events.Tags()["scalars"] else []


@tracking
@pytest.mark.slow
def test_i22_7_a_run_that_fails_is_failed_in_mlflow_and_its_plugins_hear_the_error(
    tmp_path, cli, write_recipe, monkeypatch, mlflow_uri
):
    writers = _remember_writers(monkeypatch)
    code, err, run_dir, calls = _run(tmp_path, cli, write_recipe, monkeypatch, mlflow_uri, loss="nan_on_call")
    # the run's own error reaches the user, once, after the raising plugin's warning
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("vitkit: error: ") and "training diverged" in lines[-1] and "step 3 of" in lines[-1]
    warnings = [line for line in lines if line.startswith("vitkit: warning: plugin 'raising'")]
    assert len(warnings) == 1 and "vitkit_on_run_failed: ConnectionError: tracking server unreachable" in warnings[0]
    assert "the run's own error follows" in warnings[0]
    assert "training diverged" in json.loads((run_dir / "failed.json").read_text())["error"]

    # the plugin's hook: called once, with the error and interrupted=False, before any epoch finished
    assert len(calls) == 1, calls
    assert calls[0]["error"].startswith("UserError: ") and "training diverged" in calls[0]["error"]
    assert calls[0]["interrupted"] is False and calls[0]["epochs"] == 0

    # MLflow: FAILED, with the error as a tag
    found = _mlflow_run(mlflow_uri, run_dir)
    assert found.info.status == "FAILED" and found.info.end_time is not None
    assert "training diverged" in found.data.tags["vitkit.error"]

    # TensorBoard: the writer is closed, and the two updates before the NaN reached the event file
    assert list(writers) == [run_dir] and _closed(writers[run_dir])
    assert _logged_lr_steps(run_dir) == [1, 2]


@tracking
@pytest.mark.slow
def test_i22_7_a_run_stopped_with_ctrl_c_is_killed_in_mlflow(tmp_path, cli, write_recipe, monkeypatch, mlflow_uri):
    writers = _remember_writers(monkeypatch)
    monkeypatch.setenv("VITKIT_TEST_SIGNAL_AT", "2:2:INT")  # SIGINT at epoch 2, step 2
    code, err, run_dir, calls = _run(tmp_path, cli, write_recipe, monkeypatch, mlflow_uri)
    assert code == 130, err
    assert "interrupted; checkpoints/last.pt keeps epoch 1" in err
    assert len([line for line in err.splitlines() if "plugin 'raising' failed in vitkit_on_run_failed" in line]) == 1
    assert calls == [{"error": "KeyboardInterrupt: ", "interrupted": True, "epochs": 1}]

    found = _mlflow_run(mlflow_uri, run_dir)
    assert found.info.status == "KILLED" and "vitkit.error" not in found.data.tags
    assert [m.step for m in _mlflow_client(mlflow_uri).get_metric_history(found.info.run_id, "val_acc")] == [1]

    assert list(writers) == [run_dir] and _closed(writers[run_dir])
    steps = _logged_lr_steps(run_dir)  # every update of epoch 1 and the first of epoch 2
    assert len(steps) > 2 and steps == list(range(1, len(steps) + 1))


def test_a_run_that_fails_before_it_starts_calls_no_failed_hook(tmp_path, cli, write_recipe):
    """Trainer.fit fails before vitkit_on_run_start (its output.dir is a file): no plugin heard of a run."""
    (tmp_path / "outputs").write_text("a file, not a folder")
    text = TINY_DIGITS + f'[output]\ndir = "{tmp_path / "outputs"}"\n'
    code, _, err = cli("run", write_recipe(_plugins(tmp_path, recording=RECORDING) + text))
    assert code == 2 and "cannot create a run directory" in err, err
    assert not list(tmp_path.rglob("failed_hook.jsonl"))
