"""A plugin whose hooks raise never loses a run: reported once per plugin and hook, the run goes on."""

from __future__ import annotations

import json

import pytest

from vitkit.engine.early_stopping import EarlyStopping
from vitkit.engine.hooks import GuardedHooks, is_internal
from vitkit.errors import UserError
from vitkit.plugins import new_manager

from .conftest import TINY_DIGITS

FAILING = """
import vitkit


@vitkit.hookimpl
def vitkit_on_run_start(run):
    raise ConnectionError("tracking server unreachable")


@vitkit.hookimpl
def vitkit_on_train_step(run, step, lr):
    raise ValueError(f"bad step {step}")


@vitkit.hookimpl
def vitkit_on_epoch_end(run, epoch, metrics):
    raise RuntimeError(f"epoch {epoch} not logged")


@vitkit.hookimpl
def vitkit_on_run_end(run, summary):
    raise KeyError("test_acc")
"""

COUNTING = """
import json

import vitkit


def _log(run, event):
    with open(run.run_dir / "events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")


@vitkit.hookimpl
def vitkit_on_train_step(run, epoch, step, lr, loss):
    _log(run, {"event": "step", "epoch": epoch, "step": step, "lr": lr, "loss": float(loss)})


@vitkit.hookimpl
def vitkit_on_epoch_end(run, epoch):
    _log(run, {"event": "epoch", "epoch": epoch})


@vitkit.hookimpl
def vitkit_on_run_end(run):
    _log(run, {"event": "end"})
"""


def test_failing_plugin_is_reported_once_per_hook_and_the_run_finishes(tmp_path, cli, write_recipe):
    failing, counting = tmp_path / "failing.py", tmp_path / "counting.py"
    failing.write_text(FAILING)
    counting.write_text(COUNTING)
    recipe = write_recipe(TINY_DIGITS + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    code, _, err = cli("run", recipe, "--plugin", failing, "--plugin", counting)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and not (run_dir / "failed.json").exists()
    warnings = [line for line in err.splitlines() if line.startswith("vitkit: warning: plugin 'failing'")]
    assert [w.split(" failed in ")[1].split(":")[0] for w in warnings] == [
        "vitkit_on_run_start",
        "vitkit_on_train_step",
        "vitkit_on_epoch_end",
        "vitkit_on_run_end",
    ]
    assert "ConnectionError: tracking server unreachable" in warnings[0]
    assert "ValueError: bad step 1 " in warnings[1] and "RuntimeError: epoch 1 not logged" in warnings[2]
    # the other plugin's hooks ran every time, after the failing ones
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    per_epoch = len(steps) // 2
    assert per_epoch > 1 and len(steps) == 2 * per_epoch
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))
    assert [e["epoch"] for e in steps] == [1] * per_epoch + [2] * per_epoch
    assert all(e["lr"] > 0 and e["loss"] > 0 for e in steps)
    assert [e["event"] for e in events if e["event"] != "step"] == ["epoch", "epoch", "end"]


def test_internal_plugins_are_not_guarded(tmp_path):
    """vitkit's own plugins (early stopping) still raise: their errors are user errors or bugs."""
    manager = new_manager()
    manager.register(EarlyStopping("val_f1", patience=2), "early_stopping")
    hooks = GuardedHooks(manager)
    assert is_internal(manager.get_plugin("early_stopping"))
    with pytest.raises(UserError, match="no metric 'val_f1'"):
        hooks.vitkit_on_epoch_end(run=None, epoch=1, metrics={"val_acc": 0.5})
    assert not hooks.failures
