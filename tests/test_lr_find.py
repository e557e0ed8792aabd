"""``vitkit lr-find``: the LR range test restores the model, stops on divergence, suggests sane LRs."""

from __future__ import annotations

import math
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.colors import to_rgba

import vitkit
from tests.conftest import RECIPES, ROOT, TINY_DIGITS
from vitkit.engine.lr_finder import range_test, steepest_index, suggest, valley_index
from vitkit.engine.trainer import Trainer
from vitkit.recipe import load_recipe


def _trainer(write_recipe, tmp_path) -> Trainer:
    path = write_recipe(TINY_DIGITS + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    return Trainer(load_recipe(path))


def test_suggestions_on_a_known_curve():
    # a loss that falls like a logistic in log10(lr), centred at 1e-3, then blows up past 1e-1
    lrs = [10 ** (-7 + 8 * i / 199) for i in range(200)]
    losses = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) + max(0.0, math.log10(lr) + 1) ** 2 for lr in lrs]
    steep = lrs[steepest_index(lrs, losses)]
    assert 10**-3.1 < steep < 10**-2.9
    valley = lrs[valley_index(losses)]
    # the falling stretch runs from the start to the minimum (~1e-1): halfway along it in steps
    low = min(range(200), key=losses.__getitem__)
    assert abs(valley_index(losses) - low // 2) <= 1 and valley < lrs[low]
    points = suggest(lrs, losses, 200)
    assert points["steepest"] == steepest_index(lrs, losses)
    assert 20 <= points["valley"] < low  # the first tenth of the sweep is left out


def test_sweep_restores_weights_optimizer_and_scaler(write_recipe, tmp_path):
    trainer = _trainer(write_recipe, tmp_path)
    images, targets = next(iter(trainer.train_loader))  # one real update first: the optimizer has state
    loss, _ = trainer._compute_loss(images, targets)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optim = trainer.optimizer.state_dict()
    optim_state = {i: {k: v.clone() for k, v in s.items()} for i, s in optim["state"].items()}
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    seen = []  # the first weight as each forward pass sees it: proves the sweep trained
    first = next(trainer.model.parameters())
    trainer.model.register_forward_pre_hook(lambda *_: seen.append(first.detach().flatten()[0].item()))

    result = range_test(trainer, steps=30, start=1e-4, end=1e-1)

    assert result.steps == 30 and len(set(seen)) > 20
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    after = trainer.optimizer.state_dict()
    assert after["state"].keys() == optim_state.keys()
    for i, saved in optim_state.items():
        assert all(torch.equal(after["state"][i][k], v) for k, v in saved.items())
    assert [g["lr"] for g in trainer.optimizer.param_groups] == lrs
    assert all(p.grad is None for p in trainer.model.parameters())
    assert not (tmp_path / "runs").exists()  # no run directory, no checkpoints


def test_sweep_stops_when_the_loss_diverges(write_recipe, tmp_path):
    trainer = _trainer(write_recipe, tmp_path)
    result = range_test(trainer, steps=80, start=1e-2, end=1e5)
    assert result.stop_reason is not None
    assert result.steps < 80 and len(result.losses) == result.steps
    assert result.lrs[-1] < 1e5


def test_cli_writes_the_plot_and_names_both_suggestions(cli, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = cli(
        "lr-find", RECIPES / "digits.toml", "--steps", "40", "--start", "1e-5", "--end", "1",
        "--out", out, "--set", "model.depth=2", "--set", f'output.dir="{tmp_path / "runs"}"',
    )  # fmt: skip
    assert code == 0
    assert "valley" in stdout and "steepest" in stdout and "recipe" in stdout
    assert (out / "lr_find.png").stat().st_size > 10_000
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed_loss" and 10 < len(rows) <= 41
    assert not (tmp_path / "runs").exists()


def test_bad_range_is_a_user_error(cli):
    code, _, err = cli("lr-find", RECIPES / "digits.toml", "--start", "1", "--end", "1e-3")
    assert code == 2 and "start < end" in err and "Traceback" not in err


@pytest.mark.slow
def test_digits_suggestion_is_near_the_tuned_lr(tmp_path):
    """The default sweep on recipes/digits.toml suggests within 3x of its tuned lr 2e-3."""
    recipe = load_recipe(RECIPES / "digits.toml", [f'output.dir="{tmp_path}"'])
    result = vitkit.lr_find(recipe, out=tmp_path)
    assert result.stop_reason is not None  # the default end lr (10) diverges
    for name in ("valley", "steepest"):
        assert 2e-3 / 3 <= result.suggestions[name] <= 2e-3 * 3, (name, result.suggestions)
    assert (tmp_path / "lr_find.png").is_file()


def _in_a_terminal(args: list[str], cwd: Path) -> str:
    """What ``args`` prints on a terminal (a pseudo-terminal, 120 columns): stdout and stderr as the user sees them."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


def test_i23_5_lr_find_shows_progress_and_writes_under_the_output_dir_saying_where(tmp_path):
    """On a terminal: a progress bar while it sweeps; then the plot and CSV in a new folder under output.dir
    (runs/digits/lr_find-<time>/), each path printed, nothing written into the current folder."""
    recipe = RECIPES / "digits.toml"
    text = _in_a_terminal(
        [sys.executable, "-m", "vitkit", "lr-find", str(recipe), "--steps", "20", "--set", "model.depth=1"], tmp_path
    )
    assert re.search(r"lr-find .*\d+/20 .*lr \d\.\de-\d\d", text), text  # the bar: updates done, the LR now
    written = re.findall(r"^wrote (\S+)\s*$", text, re.MULTILINE)
    assert [Path(p).name for p in written] == ["lr_find.png", "lr_find.csv"], text
    (folder,) = {Path(p).parent for p in written}
    assert folder.parent == Path("runs/digits") and folder.name.startswith("lr_find-"), text
    assert (tmp_path / folder / "lr_find.png").stat().st_size > 10_000
    rows = (tmp_path / folder / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,smoothed_loss" and len(rows) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else in the current folder


def test_i23_5_lr_find_plot_draws_both_suggestions_above_the_curves_labelled_with_their_lr():
    from vitkit.engine.lr_finder import LRFindResult, lr_find_figure

    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [2.0 - 1.5 / (1 + math.exp(-3 * (math.log10(lr) + 3))) for lr in lrs]
    result = LRFindResult(lrs, losses, losses, 100, lrs[0], lrs[-1], recipe_lr=lrs[50])
    result.points = suggest(lrs, losses, 100)
    fig = lr_find_figure(result, "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    marks = {name: lines[f"{name} {lrs[i]:.1e}"] for name, i in result.points.items()}
    assert set(marks) == {"valley", "steepest"}
    others = [line for line in ax.get_lines() if line not in marks.values()]
    assert {"loss per update", "smoothed loss", f"recipe lr {lrs[50]:.1e}"} <= {line.get_label() for line in others}
    assert min(m.get_zorder() for m in marks.values()) > max(line.get_zorder() for line in others)
    colours = [to_rgba(line.get_color()) for line in [*marks.values(), *others]]
    assert len(set(colours[:2])) == 2 and not set(colours[:2]) & set(colours[2:])  # apart from each other and the rest
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert f"valley {lrs[result.points['valley']]:.1e}" in legend
    assert f"steepest {lrs[result.points['steepest']]:.1e}" in legend
    for name, mark in marks.items():  # each marker sits on the smoothed curve at its suggestion
        assert mark.get_xdata()[0] == lrs[result.points[name]] and mark.get_ydata()[0] == losses[result.points[name]]
