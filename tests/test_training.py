"""End-to-end: a short digits run trains, writes its run directory, and re-evaluates."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from vitkit.runs.checkpoint import load_checkpoint

from .conftest import RECIPES, TINY_DIGITS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("runs")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 6"))
    assert main(["run", str(recipe), "--set", f'output.dir="{out}"']) == 0
    (run_dir,) = (out / "tiny").iterdir()
    return run_dir


def test_run_directory_contents(finished_run):
    names = {p.name for p in finished_run.iterdir()}
    assert {
        "recipe.toml",
        "metrics.csv",
        "summary.json",
        "loss.png",
        "accuracy.png",
        "model.safetensors",
        "report.html",
        "checkpoints",
    } <= names
    assert {p.name for p in (finished_run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    rows = list(csv.DictReader((finished_run / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 6 and {"epoch", "train_loss", "val_loss", "val_acc", "lr", "time"} <= set(rows[0])
    summary = json.loads((finished_run / "summary.json").read_text())
    for key in ("test_acc", "best_val_acc", "best_epoch", "params", "wall_time_s", "device"):
        assert key in summary
    assert summary["device"] == "cpu"
    assert (finished_run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_short_run_beats_chance_by_far(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["test_acc"] > 0.6  # chance is 0.1
    rows = list(csv.DictReader((finished_run / "metrics.csv").read_text().splitlines()))
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def test_checkpoints_load_with_weights_only(finished_run):
    state = load_checkpoint(finished_run / "checkpoints" / "last.pt")
    assert state["epoch"] == 6 and "optimizer" in state and "scheduler" in state
    best = load_checkpoint(finished_run / "checkpoints" / "best.pt")
    assert best["data"]["classes"] == [str(i) for i in range(10)]
    assert all(isinstance(v, torch.Tensor) for v in best["model"].values())


def test_eval_reproduces_test_accuracy(finished_run, cli):
    code, out, err = cli("eval", finished_run)
    assert code == 0, err
    summary = json.loads((finished_run / "summary.json").read_text())
    report = json.loads((finished_run / "eval_test.json").read_text())
    assert report["test_acc"] == pytest.approx(summary["test_acc"])
    assert report["count"] == 359  # the fixed 20% digits test split


def test_eval_of_a_non_run_is_a_user_error(cli, tmp_path):
    code, _, err = cli("eval", tmp_path)
    assert code == 2 and "not a finished run directory" in err


def test_same_seed_same_result(tmp_path, cli):
    recipe = tmp_path / "r.toml"
    # a depth-1 model at batch 128 (10 steps): the same seed still gives the same numbers
    tiny = TINY_DIGITS.replace("depth = 2", "depth = 1").replace("batch_size = 32", "batch_size = 128")
    recipe.write_text(tiny.replace("epochs = 2", "epochs = 1"))
    accs = []
    for _ in range(2):
        assert cli("run", recipe, "--set", f'output.dir="{tmp_path}"')[0] == 0
    for run_dir in sorted((tmp_path / "tiny").iterdir()):
        accs.append(json.loads((run_dir / "summary.json").read_text())["final_train_loss"])
    assert len(accs) == 2 and accs[0] == accs[1]


def test_help_does_not_import_torch():
    code = (
        "import sys; from vitkit.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_console_script_and_module_entry_points(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vitkit", "list", "models", "vit_nano*"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "vit_nano_patch4_16" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "vitkit", "run", str(tmp_path / "x.toml")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_digits_recipe_reaches_097(tmp_path, cli):
    code, _, err = cli("run", RECIPES / "digits.toml", "--set", f'output.dir="{tmp_path}"')
    assert code == 0, err
    (run_dir,) = (tmp_path / "digits").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["test_acc"] >= 0.97
