"""Progressive resizing (issue 27 item 3): ``train.progressive`` trains on smaller images early and at
``model.img_size`` at the end; the model takes them through ``set_dynamic_img_size``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitkit import create_model
from vitkit.errors import UserError
from vitkit.models.weights import resample_pos_embed
from vitkit.runs.checkpoint import load_checkpoint

from .conftest import ROOT


def test_i27_3_epoch_sizes_from_start_until_and_from_pairs():
    from vitkit.engine.progressive import epoch_sizes
    from vitkit.recipe import ProgressiveConfig

    # 10 epochs, until 0.6: epochs 1-6 grow from 0.5 * 32 = 16 (multiples of 4, rounded down), 7-10 at 32
    sizes = epoch_sizes(ProgressiveConfig(start=0.5, until=0.6), 32, 4, 10, "r")
    assert sizes == [16, 16, 20, 24, 24, 28, 32, 32, 32, 32]
    pairs = epoch_sizes(ProgressiveConfig(sizes=[[4, 24], [2, 16]]), 32, 8, 6, "r")
    assert pairs == [32, 16, 16, 24, 24, 24]  # img_size before the first pair; each size from its epoch on
    assert epoch_sizes(ProgressiveConfig(), 32, 4, 3, "r") == [32, 32, 32]
    with pytest.raises(UserError, match=r"sizes: \[1, 10\]: sizes must be multiples of the patch size 4"):
        epoch_sizes(ProgressiveConfig(sizes=[[1, 10]]), 32, 4, 3, "r")
    with pytest.raises(UserError, match="start .* or sizes, not both"):
        epoch_sizes(ProgressiveConfig(start=0.5, sizes=[[1, 16]]), 32, 4, 3, "r")


@pytest.mark.parametrize("pos_embed", ["learn", "sincos", "rope2d"])
def test_i27_3_dynamic_img_size_positions_as_a_model_built_at_that_size(pos_embed):
    """At 8 px a 16-px model gives what an 8-px model with the same weights gives: learned positions
    resampled (timm's bicubic), sin-cos and rotary ones recomputed; at 16 px nothing changes."""
    torch.manual_seed(0)
    options = {"pos_embed": pos_embed, "num_classes": 5, "in_chans": 1, "depth": 2}
    big = create_model("vit_nano_patch4_16", **options).eval()
    small = create_model("vit_nano_patch4_16", img_size=8, **options).eval()
    state = big.state_dict()
    if pos_embed == "learn":
        state["pos_embed"] = resample_pos_embed(state["pos_embed"], 2, big.num_prefix_tokens)
    small.load_state_dict(state)
    full, little = torch.randn(3, 1, 16, 16), torch.randn(3, 1, 8, 8)
    before = big(full)
    with pytest.raises(ValueError, match="expected 16x16 images"):
        big(little)
    big.set_dynamic_img_size(True)
    torch.testing.assert_close(big(full), before, rtol=0, atol=0)
    torch.testing.assert_close(big(little), small(little))
    if pos_embed == "learn":  # the parameter keeps the 16-px grid and learns through the resampling
        big.train()
        big(little).sum().backward()
        assert big.pos_embed.shape == (1, 16, 64) and big.pos_embed.grad.abs().sum() > 0


RECIPE = """
name = "prog"
seed = 1
[model]
name = "vit_nano_patch4_16"
depth = 1
pos_embed = "learn"
[data]
dataset = "digits"
batch_size = 256
[optimizer]
name = "adamw"
lr = 3e-3
[scheduler]
name = "constant"
[train]
epochs = 4
progressive = { sizes = [[1, 8], [3, 12], [4, 16]] }
[output]
dir = "OUT"
"""


def _vitkit(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *args],
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang only
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
    )


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_i27_3_progressive_run_changes_size_at_the_stated_epochs_and_resumes_at_the_right_size(tmp_path, cli):
    """The uninterrupted run and the resume run in this process; the killed run in a subprocess (SIGKILL)."""
    recipe = tmp_path / "prog.toml"
    recipe.write_text(RECIPE.replace("OUT", str(tmp_path / "runs")))
    code, out, err = cli("run", recipe)
    assert code == 0, err
    assert "train.progressive: 8 px (epochs 1-2), 12 px (epoch 3), 16 px (epoch 4); evaluation at 16 px" in out
    (reference,) = (tmp_path / "runs" / "prog").iterdir()
    rows = _rows(reference)
    assert [row["train_size"] for row in rows] == ["8", "8", "12", "16"]
    best = load_checkpoint(reference / "checkpoints" / "best.pt")
    assert best["data"]["img_size"] == 16 and best["model"]["pos_embed"].shape == (1, 16, 64)  # the final size

    # killed at step 1 of epoch 3 (last.pt holds epoch 2), resumed: epochs 3 and 4 at 12 and 16 px, as uninterrupted
    killed = tmp_path / "killed.toml"
    killed.write_text(RECIPE.replace("OUT", str(tmp_path / "killed")))
    stopped = _vitkit(["run", str(killed)], VITKIT_TEST_SIGNAL_AT="3:1:KILL")
    assert stopped.returncode != 0
    (run_dir,) = (tmp_path / "killed" / "prog").iterdir()
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err
    again = _rows(run_dir)
    assert [row["train_size"] for row in again] == ["8", "8", "12", "16"]
    for got, want in zip(again, rows, strict=True):
        for key in ("train_loss", "val_loss", "val_acc"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-4), (got["epoch"], key)


def test_i27_3_progressive_user_errors(tmp_path, cli, write_recipe):
    text = RECIPE.replace("OUT", str(tmp_path / "runs"))
    code, _, err = cli("run", str(write_recipe(text.replace("[[1, 8], [3, 12], [4, 16]]", "[[1, 10]]"))))
    assert code == 2 and "train.progressive.sizes: [1, 10]: sizes must be multiples of the patch size 4" in err
    assert "Traceback" not in err
    cait = text.replace('name = "vit_nano_patch4_16"\ndepth = 1\npos_embed = "learn"', 'name = "cait_nano_patch4_16"')
    code, _, err = cli("run", str(write_recipe(cait)))
    assert code == 2 and "train.progressive: CaiT takes only model.img_size images" in err


@pytest.mark.slow
def test_i27_3_compiled_model_recompiles_once_per_size_not_every_step(tmp_path, monkeypatch):
    """train.compile = "auto" (the test hook forces "compiled", eager backend) over 8, 12, 16 px: the
    compiled forward is traced at most once per size, while 10 steps of each epoch run through it."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from vitkit.engine.trainer import Trainer
    from vitkit.recipe import recipe_from_dict

    monkeypatch.setenv("VITKIT_TEST_COMPILE_FIGURES", "10,5,0.01")
    torch._dynamo.reset()
    counters.clear()
    recipe = recipe_from_dict(
        {
            "name": "prog",
            "model": {"name": "vit_nano_patch4_16", "depth": 1},
            "data": {"dataset": "digits", "batch_size": 128},
            "scheduler": {"name": "constant"},
            "train": {"epochs": 3, "compile": "auto", "progressive": {"sizes": [[1, 8], [2, 12], [3, 16]]}},
            "output": {"dir": str(tmp_path), "plots": False},
        }
    )
    trainer = Trainer(recipe)
    summary = trainer.fit()
    assert summary["compile_auto"]["choice"] == "compiled" and trainer.forward is trainer.compile_trial.compiled
    assert [row["train_size"] for row in trainer.run.history] == [8, 12, 16]
    assert len(trainer.train_loader) == 10
    assert 1 <= counters["stats"]["unique_graphs"] <= 3
    torch._dynamo.reset()
