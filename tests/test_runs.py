"""``vitkit runs`` on a folder with a finished, an interrupted (SIGKILLed) and a failed (diverged) run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import ROOT

RECIPE = """
name = "{name}"
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[optimizer]
name = "{optimizer}"
lr = {lr}
[train]
epochs = {epochs}
[output]
dir = "{out}"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder holding three real runs: finished, interrupted and failed."""
    from vitkit.cli import main

    tmp = tmp_path_factory.mktemp("runs")
    out = tmp / "runs"

    def recipe(name: str, epochs: int, optimizer: str = "adamw", lr: float = 3e-3) -> str:
        path = tmp / f"{name}.toml"
        path.write_text(RECIPE.format(name=name, optimizer=optimizer, lr=lr, epochs=epochs, out=out))
        return str(path)

    assert main(["run", recipe("digits_ok", 1)]) == 0
    # killed by the test hook while writing the 3rd last.pt (epoch 2 of 2): last.pt keeps epoch 1
    killed = subprocess.run(
        [sys.executable, "-m", "vitkit", "run", recipe("digits_killed", 2)],
        env={**os.environ, "PYTHONPATH": str(ROOT), "VITKIT_TEST_KILL_AFTER_TEMP": "last.pt:3"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert main(["run", recipe("digits_diverged", 2, "sgd", 1e30)]) == 2  # NaN loss: a user error
    return out


def test_runs_table_shows_status_results_and_resume_command(runs, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = cli("runs", runs)
    assert code == 0, err
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 5}
    assert set(rows) == {"digits_ok", "digits_killed", "digits_diverged"}
    assert "finished" in rows["digits_ok"] and "1/1" in rows["digits_ok"]
    assert "interrupted: resumable" in rows["digits_killed"] and "1/2" in rows["digits_killed"]
    assert "failed" in rows["digits_diverged"] and "0/2" in rows["digits_diverged"]
    (killed_dir,) = (runs / "digits_killed").iterdir()
    assert f"vitkit run --resume {killed_dir}" in out
    assert "training diverged: the loss is NaN or inf at epoch 1" in out


def test_runs_json_sort_and_filters(runs, cli):
    code, out, _ = cli("runs", runs, "--json", "--sort", "best_val_acc")
    assert code == 0
    found = json.loads(out)
    by_name = {r["name"]: r for r in found}
    ok = by_name["digits_ok"]
    (ok_dir,) = (runs / "digits_ok").iterdir()
    summary = json.loads((ok_dir / "summary.json").read_text())
    assert ok["status"] == "finished" and ok["test_acc"] == summary["test_acc"]
    assert ok["best_val_acc"] == summary["best_val_acc"] and ok["wall_time_s"] == summary["wall_time_s"]
    assert (ok["model"], ok["dataset"], ok["epochs_done"], ok["epochs_planned"]) == (
        "vit_nano_patch4_16",
        "digits",
        1,
        1,
    )
    killed = by_name["digits_killed"]
    assert killed["status"] == "interrupted" and killed["test_acc"] is None and killed["epochs_done"] == 1
    assert killed["resume"] == f"vitkit run --resume {killed['run_dir']}" and killed["best_val_acc"] > 0
    failed = by_name["digits_diverged"]
    assert failed["status"] == "failed" and failed["resume"] is None and "diverged" in failed["error"]
    # best val acc, largest first; the failed run has none and comes last
    values = [r["best_val_acc"] for r in found]
    assert values[-1] is None and values[:2] == sorted(values[:2], reverse=True)

    code, out, _ = cli("runs", runs, "--json", "--name", "digits_*ed", "--sort", "name")
    assert [r["name"] for r in json.loads(out)] == ["digits_diverged", "digits_killed"]
    code, out, _ = cli("runs", runs, "--json", "--model", "vit_tiny*")
    assert json.loads(out) == []
    code, _, err = cli("runs", runs, "--sort", "accuracy")
    assert code == 2 and "invalid choice: 'accuracy'" in err
    code, _, err = cli("runs", runs / "nowhere")
    assert code == 2 and "no such directory" in err


def test_resumed_run_finishes_and_runs_lists_it_finished(runs, cli):
    (killed_dir,) = (runs / "digits_killed").iterdir()
    code, _, err = cli("run", "--resume", killed_dir)
    assert code == 0, err
    code, out, _ = cli("runs", runs, "--json", "--name", "digits_killed")
    (row,) = json.loads(out)
    assert row["status"] == "finished" and row["epochs_done"] == 2 and row["test_acc"] is not None


def test_runs_command_does_not_import_torch(runs):
    code = (
        "import sys; from vitkit.cli import main; "
        f"assert main(['runs', {str(runs)!r}, '--json']) == 0; "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 3
