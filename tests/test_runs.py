"""``vitkit runs`` on a folder with a finished, an interrupted (SIGKILLed) and a failed (diverged) run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
    rows = {line.split("/")[0]: line for line in out.splitlines() if line.startswith("digits_")}
    assert set(rows) == {"digits_ok", "digits_killed", "digits_diverged"}
    assert "finished" in rows["digits_ok"] and "1/1" in rows["digits_ok"]
    assert "interrupted" in rows["digits_killed"] and "1/2" in rows["digits_killed"]
    assert "failed" in rows["digits_diverged"] and "0/2" in rows["digits_diverged"]
    (killed_dir,) = (runs / "digits_killed").iterdir()
    assert f"resume vitkit run --resume {killed_dir}" in out
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


def _leave_run(root: Path, folder: str, test_acc: float | None, name: str = "digits") -> Path:
    """The files a run leaves in ``root/folder``: recipe, checkpoints/, metrics.csv; summary.json when
    ``test_acc`` is given (finished), else checkpoints/last.pt (interrupted)."""
    run_dir = root / folder
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "recipe.toml").write_text(RECIPE.format(name=name, optimizer="adamw", lr=2e-3, epochs=3, out=root))
    (run_dir / "metrics.csv").write_text("epoch,train_loss,val_acc,time\n1,1.2,0.61,2.5\n")
    if test_acc is None:
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    else:
        summary = {"name": name, "model": "vit_nano_patch4_16", "epochs_run": 3, "best_val_acc": 0.9}
        (run_dir / "summary.json").write_text(json.dumps({**summary, "test_acc": test_acc, "wall_time_s": 67.3}))
    return run_dir


def test_i23_4_runs_piped_fits_80_columns_as_plain_text_with_each_runs_folder(tmp_path):
    """Four runs named "digits", two started the same second and one in another output.dir: piped at
    80 columns, one plain line per run, each starting with its folder; --json parses, one object each."""
    folders = {
        "runs/digits/20261205-091500": 0.9811,
        "runs/digits/20261205-091500-1": 0.9733,
        "runs/sweep/digits/20261205-101500": 0.9644,
        "runs/digits/20261205-111500": None,
    }
    for folder, test_acc in folders.items():
        _leave_run(tmp_path, folder, test_acc)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "vitkit", "runs", "runs"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(map(len, lines)) <= 80, proc.stdout
    assert "\x1b" not in proc.stdout and not set(proc.stdout) & set("─│┃━┏┓┗┛┡┩└┘╇┳┻"), proc.stdout
    rows = {line.split()[0]: line for line in lines if line.startswith("digits/") or line.startswith("sweep/")}
    assert set(rows) == {folder.removeprefix("runs/") for folder in folders}, proc.stdout
    for folder, test_acc in folders.items():
        row = rows[folder.removeprefix("runs/")]
        assert ("finished" if test_acc else "interrupted") in row and (f"{test_acc:.4f}" if test_acc else "-") in row
    header = lines[1].split()
    assert header[0] == "run" and "test" in header and header[-1] == "status", proc.stdout
    assert "resume vitkit run --resume runs/digits/20261205-111500" in lines

    proc = subprocess.run(
        [sys.executable, "-m", "vitkit", "runs", "runs", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    found = json.loads(proc.stdout)
    assert sorted(r["run_dir"] for r in found) == sorted(folders)
    for r in found:
        assert r["folder"] == r["run_dir"].removeprefix("runs/") and r["name"] == "digits"
        assert r["test_acc"] == folders[r["run_dir"]] and r["model"] == "vit_nano_patch4_16"


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
