"""Resume: a real ``python -m vitkit run`` killed at several points (SIGKILL mid-epoch, SIGKILL after a
checkpoint's temp file is written, SIGKILL while writing metrics, Ctrl-C) and resumed each time ends with
exactly the metrics of an uninterrupted run with the same seed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vitkit.runs.checkpoint import load_checkpoint

from .conftest import ROOT

RECIPE = """
name = "kill"
seed = 3
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[augment]
train = [{ name = "translate", pixels = 2 }]
[optimizer]
name = "adamw"
lr = 3e-3
[scheduler]
name = "cosine"
warmup_epochs = 1
[train]
epochs = 7
[output]
dir = "OUT"
"""
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # not time, img_per_s


def _rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "metrics.csv"
    return list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else []


def _result(run_dir: Path) -> tuple[float, float, list[tuple[str, ...]]]:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [tuple(row[k] for k in COMPARED) for row in _rows(run_dir)]
    return summary["test_acc"], summary["final_train_loss"], rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its recipe, run directory and result."""
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("reference")
    recipe = out / "kill.toml"
    recipe.write_text(RECIPE.replace("OUT", str(out / "runs")))
    assert main(["run", str(recipe)]) == 0
    (run_dir,) = (out / "runs" / "kill").iterdir()
    return recipe, run_dir, _result(run_dir)


# ``python -m vitkit`` as a terminal's foreground process, which Ctrl-C interrupts. A shell starts a
# background job (``pytest &``, a script's ``nohup ... &``) with SIGINT ignored, its children inherit that
# and Python keeps it: without this, Ctrl-C at a test point did nothing when the suite ran in the background.
FOREGROUND_VITKIT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('vitkit', run_name='__main__', alter_sys=True)"
)


def _start(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen:
    """``vitkit run ARGS``; ``VITKIT_TEST_SIGNAL_AT`` / ``VITKIT_TEST_KILL_AFTER_TEMP`` in ``env`` stop it
    at a chosen epoch and step, or file write (never by timing)."""
    log = open(tmp_path / f"log{len(list(tmp_path.glob('log*.txt')))}.txt", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-c", FOREGROUND_VITKIT, "run", *args],
        stdout=log,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def _wait(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)  # a guard against a hang only
    return proc.returncode, err


def _saved_epoch(run_dir: Path) -> int:
    """The epoch of ``last.pt``: it must always load (never left broken)."""
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"]


@pytest.mark.slow
def test_killed_at_five_points_and_resumed_matches_uninterrupted(reference, tmp_path, cli):
    recipe, _, expected = reference
    out = tmp_path / "runs"
    killed = tmp_path / "kill.toml"
    killed.write_text(recipe.read_text().replace(str(recipe.parent / "runs"), str(out)))
    survived = []

    # 1. SIGKILL at step 2 of epoch 1: only the epoch-0 checkpoint exists
    code, _ = _wait(_start([str(killed)], tmp_path, VITKIT_TEST_SIGNAL_AT="1:2:KILL"))
    assert code == -signal.SIGKILL
    (run_dir,) = (out / "kill").iterdir()
    assert _saved_epoch(run_dir) == 0 and _rows(run_dir) == []
    survived.append("sigkill in epoch 1")

    # 2. SIGKILL after the temp file of the 2nd last.pt of this process is written, before the rename
    code, _ = _wait(_start(["--resume", str(run_dir)], tmp_path, VITKIT_TEST_KILL_AFTER_TEMP="last.pt:2"))
    assert code == -signal.SIGKILL
    assert _saved_epoch(run_dir) == 1
    assert list((run_dir / "checkpoints").glob(".last.pt.*.tmp")), "killed before the temp file was written"
    survived.append("sigkill between temp file and rename")

    # 3. SIGKILL in the middle of training, two epochs later (at step 1 of epoch 4)
    code, _ = _wait(_start(["--resume", str(run_dir)], tmp_path, VITKIT_TEST_SIGNAL_AT="4:1:KILL"))
    assert code == -signal.SIGKILL
    assert _saved_epoch(run_dir) == 3 and len(_rows(run_dir)) == 3
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # --resume removed the stale temp file
    survived.append("sigkill mid-run")

    # 4. SIGKILL while writing metrics.csv (last.pt is already saved, metrics.csv one row behind)
    code, _ = _wait(_start(["--resume", str(run_dir)], tmp_path, VITKIT_TEST_KILL_AFTER_TEMP="metrics.csv:1"))
    assert code == -signal.SIGKILL
    assert _saved_epoch(run_dir) == 4 and len(_rows(run_dir)) == 3
    survived.append("sigkill while writing metrics.csv")

    # 5. Ctrl-C (SIGINT at step 1 of epoch 6): exit code 130 and a message that says how to continue
    code, err = _wait(_start(["--resume", str(run_dir)], tmp_path, VITKIT_TEST_SIGNAL_AT="6:1:INT"))
    assert code == 130, err
    assert "Traceback" not in err and f"continue with  vitkit run --resume {run_dir}" in err
    assert _saved_epoch(run_dir) == 5 and "last.pt keeps epoch 5" in err
    survived.append("ctrl-c")

    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err
    assert _result(run_dir) == expected
    assert len(survived) == 5


def test_killed_after_the_last_epoch_resumes_to_the_test_step_then_refuses(reference, tmp_path, cli):
    """Killed during the final test evaluation (last.pt holds the last epoch, no summary.json yet)."""
    import shutil

    _, ref_dir, expected = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    (run_dir / "summary.json").unlink()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 7 and isinstance(state["rng"]["python"], tuple) and "numpy" in state["rng"]
    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err
    assert _result(run_dir) == expected
    code, _, err = cli("run", "--resume", run_dir)
    assert code == 2 and "this run already finished" in err


@pytest.mark.slow
def test_item23_resume_restores_early_stopping_state(tmp_path, cli):
    """Issue 17 item 23: val_acc never improves by min_delta 1.0, so with patience 2 the run stops after
    epoch 3; killed after epoch 2 is saved and resumed, it must still stop after epoch 3."""
    recipe = tmp_path / "stop.toml"
    recipe.write_text(
        RECIPE.replace("OUT", str(tmp_path / "runs")).replace(
            "epochs = 7", 'epochs = 6\n[train.early_stopping]\nmetric = "val_acc"\npatience = 2\nmin_delta = 1.0'
        )
    )
    proc = subprocess.run(  # the test hook SIGKILLs the run on its 4th last.pt write: epoch 3's, before the rename
        [sys.executable, "-m", "vitkit", "run", str(recipe)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "VITKIT_TEST_KILL_AFTER_TEMP": "last.pt:4"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (run_dir,) = (tmp_path / "runs" / "kill").iterdir()
    assert _saved_epoch(run_dir) == 2
    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 3, summary["stop_reason"]
    assert "early stopping" in summary["stop_reason"] and "(epoch 1)" in summary["stop_reason"]
