"""Issue 33, ``vitkit tune``: study identity under a shared storage (2), pruner warmup (9), resuming after Ctrl-C
(11), the test accuracy with --folds (12), --jobs and --threads, a reused pid. Tiny digits studies on CPU."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import tomllib

from .test_tune import RECIPE, trials_csv, vitkit

optuna = pytest.importorskip("optuna")

LR = ["--space", "optimizer.lr=loguniform(1e-3,3e-2)"]
ONE_EPOCH = ["--set", "train.epochs=1", "--pruner", "none"]


@pytest.fixture
def here(tmp_path: Path, monkeypatch) -> Path:
    """tmp_path as the working directory, with the tiny recipe in it (in-process commands write runs/ there)."""
    (tmp_path / "tiny.toml").write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def summary_of(output: str) -> dict:
    """The tune_summary.json of the study a command printed ("... -> STUDY_DIR (...")."""
    study_dir = Path(output.split(" -> ", 1)[1].split(" (", 1)[0])
    return json.loads((study_dir / "tune_summary.json").read_text())


@pytest.mark.slow
def test_i33_2_a_shared_storage_keeps_one_study_per_search(cli, here: Path) -> None:
    storage = ["--storage", f"sqlite:///{here / 'shared.db'}"]
    code, first, err = cli("tune", "tiny.toml", *LR, "--trials", "1", *ONE_EPOCH, *storage)
    assert code == 0, err
    name = summary_of(first)["study"]
    code, out, err = cli("tune", "tiny.toml", *LR, "--trials", "1", *ONE_EPOCH, *storage, "--new")
    assert code == 0, err
    assert "starting study" in out and summary_of(out)["study"] != name  # --new: a study of its own
    assert summary_of(out)["counts"]["complete"] == 1  # its own trial, not the first study's
    # another space and another epoch count: another study, which trains its own trials and draws its plots
    wd = ["--space", "optimizer.weight_decay=loguniform(0.01,0.1)", "--set", "train.epochs=2", "--pruner", "none"]
    code, out, err = cli("tune", "tiny.toml", *wd, "--trials", "1", *storage)
    assert code == 0, err
    other = summary_of(out)
    assert other["study"] != name and other["counts"]["complete"] == 1
    assert list(other["best"]["params"]) == ["optimizer.weight_decay"] and other["best"]["epochs_run"] == 2
    assert (Path(other["study_dir"]) / "params.png").is_file()
    assert (
        "optimizer.lr" not in other["best"]["params"]
        and "lr = 0.003" in (Path(other["study_dir"]) / "best.toml").read_text()
    )  # the recipe's own lr, not a value of the first study
    # joining the first study on purpose with that other search: one line, exit 2
    code, _, err = cli("tune", "tiny.toml", *wd, "--trials", "1", *storage, "--study-name", name)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"study {name}" in err and "searches something else (recipe.train.epochs: 1 there, 2 here)" in err
    # joining it with its own search: it goes on
    code, out, err = cli("tune", "tiny.toml", *LR, "--trials", "2", *ONE_EPOCH, *storage, "--study-name", name)
    assert code == 0, err
    assert f"continuing study {name}" in out and summary_of(out)["counts"]["complete"] == 2
    assert len(optuna.get_all_study_names(storage[1])) == 3  # the first, its --new twin, the other search


def _enqueued(storage: str, trials: list[dict]) -> None:
    """A study made with Optuna, its trials enqueued (``--study-name tiny-tune`` joins it)."""
    study = optuna.create_study(storage=storage, study_name="tiny-tune", direction="minimize")
    for values in trials:
        study.enqueue_trial(values)


@pytest.mark.slow
def test_i33_9_median_pruner_waits_half_of_the_searched_epochs(cli, here: Path) -> None:
    # the recipe trains 2 epochs; the study searches train.epochs up to 4: no trial is judged before epoch 3
    storage = f"sqlite:///{here / 'pruned.db'}"
    good, bad = {"optimizer.lr": 2e-2, "train.epochs": 4}, {"optimizer.lr": 1e-7, "train.epochs": 4}
    _enqueued(storage, [good, good, bad])
    space = ["--space", "optimizer.lr=loguniform(1e-7,3e-2)", "--space", "train.epochs=int(2,4)"]
    code, out, err = cli(
        "tune", "tiny.toml", *space, "--trials", "3", "--pruner", "median", "--storage", storage,
        "--study-name", "tiny-tune",
    )  # fmt: skip
    assert code == 0, err
    rows = trials_csv(Path(summary_of(out)["study_dir"]))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [r["epochs_run"] for r in rows] == ["4", "4", "3"]  # judged after epoch 3 of 4, not after epoch 1


def test_i33_9_warmup_and_hyperband_budget_come_from_one_plan(here: Path) -> None:
    from vitkit.commands.tune import study as tune
    from vitkit.commands.tune.settings import settings_for
    from vitkit.recipe import load_recipe

    recipe = load_recipe(here / "tiny.toml")  # 2 epochs
    searched = settings_for(recipe, ["train.epochs=int(2,6)", *LR[1:]], trials=6, pruner="median")
    assert tune.prune_plan(recipe, searched) == tune.PrunePlan(steps=6, first_judged=4)
    assert tune._pruner(searched, tune.prune_plan(recipe, searched))._n_warmup_steps == 4
    hyper = settings_for(recipe, ["train.epochs=choice(3,5)"], trials=6, pruner="hyperband")
    assert tune._pruner(hyper, tune.prune_plan(recipe, hyper))._max_resource == 5
    plain = settings_for(recipe, LR[1:], trials=6)
    assert tune.prune_plan(recipe, plain) == tune.PrunePlan(steps=2, first_judged=2)  # 2 epochs: never judged
    folds = settings_for(recipe, LR[1:], trials=6, folds=5)
    assert tune.prune_plan(recipe, folds) == tune.PrunePlan(steps=5, first_judged=3)


@pytest.mark.slow
def test_i33_11_a_study_resumed_after_ctrl_c_is_the_uninterrupted_study(cli, tmp_path: Path, monkeypatch) -> None:
    # the Ctrl-C'd command runs in a process of its own; the uninterrupted study and the resumed one in this process
    args = ["tune", "tiny.toml", *LR, "--trials", "2", *ONE_EPOCH, "--seed", "3"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for where in (whole, cut):
        where.mkdir()
        (where / "tiny.toml").write_text(RECIPE)
    monkeypatch.chdir(whole)
    code, _, err = cli(*args)
    assert code == 0, err
    stopped = vitkit(cut, *args, env={"VITKIT_TEST_SIGNAL_AT": "1:2:INT"})  # Ctrl-C in trial 0, epoch 1, step 2
    assert stopped.returncode == 130, stopped.stderr
    monkeypatch.chdir(cut)
    code, _, err = cli(*args)
    assert code == 0, err
    [expected] = (whole / "runs" / "tiny-tune").iterdir()
    [study] = (cut / "runs" / "tiny-tune").iterdir()
    rows = trials_csv(study)
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    keys = ["optimizer.lr", "best_val_loss"]
    complete = [[r[k] for k in keys] for r in rows if r["state"] == "COMPLETE"]
    assert complete == [[r[k] for k in keys] for r in trials_csv(expected)]  # the same draws, the same scores
    assert rows[0]["optimizer.lr"] == rows[1]["optimizer.lr"]  # the interrupted values ran again first


@pytest.mark.slow
def test_i33_12_folds_say_which_test_accuracy_is_which(cli, here: Path) -> None:
    # also issue 28.1's check (it was test_i28_1_folds_score_each_trial_by_the_mean_over_folds, the same study):
    # the trial's score is the mean over its folds of each fold model's best val_loss
    code, out, err = cli("tune", "tiny.toml", *LR, "--trials", "1", "--folds", "2", *ONE_EPOCH)
    assert code == 0, err
    summary = summary_of(out)
    best, study_dir = summary["best"], Path(summary["study_dir"])
    [row] = trials_csv(study_dir)
    losses = []
    for k in (1, 2):
        run = Path(row["run_dir"]) / f"fold{k}"
        fold = json.loads((run / "summary.json").read_text())
        assert f'fold = "{k}/2"' in (run / "recipe.toml").read_text()
        with open(run / "metrics.csv", newline="") as f:
            losses.append(float(list(csv.DictReader(f))[fold["best_epoch"] - 1]["val_loss"]))
    assert row["epochs_run"] == "2" and float(row["best_val_loss"]) == pytest.approx(sum(losses) / 2, rel=1e-5)
    folds = [json.loads((Path(best["run_dir"]) / f"fold{k}" / "eval_test.json").read_text()) for k in (1, 2)]
    assert best["test_acc_folds"] == [f["test_acc"] for f in folds]
    assert best["test_acc"] == pytest.approx(sum(best["test_acc_folds"]) / 2)
    says = "the mean over the 2 fold models of the trial"
    assert says in best["test_acc_of"] and "trains one model on the usual split" in best["test_acc_of"]
    assert says in out and says in (study_dir / "tune.html").read_text()
    header = [line for line in (study_dir / "best.toml").read_text().splitlines() if line.startswith("#")]
    assert any(f"test accuracy {best['test_acc']:.4f}" in line and says in line for line in header)
    assert any("(the mean over 2 folds)" in line for line in header)
    code, _, err = cli("run", study_dir / "best.toml")  # what the header says: one model on the usual split
    assert code == 0, err
    [run] = (here / "runs" / "tiny").iterdir()
    assert tomllib.loads((run / "recipe.toml").read_text())["data"]["fold"] == ""
    assert json.loads((run / "summary.json").read_text())["test_acc"] is not None


def test_i33_x_jobs_honour_threads(cli, here: Path, monkeypatch) -> None:
    """``vitkit tune --jobs 2 --threads 3``: each worker process is started with 3 threads, not cores // 2."""
    from vitkit.commands.tune import command as tune

    started: list[list[str]] = []

    class Worker:  # records the command a worker starts with, then ends at once
        returncode = 0

        def __init__(self, cmd: list[str], **kwargs: object) -> None:
            started.append(cmd)

        def poll(self) -> int:
            return 0

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(tune.subprocess, "Popen", Worker)
    (here / "tiny.toml").write_text(RECIPE.replace("threads = 1\n", ""))
    code, _, err = cli("tune", "tiny.toml", *LR, "--trials", "2", *ONE_EPOCH, "--jobs", "2", "--threads", "3")
    assert code == 0, err
    assert len(started) == 2
    assert all(cmd[cmd.index("--threads") + 1] == "3" for cmd in started)


@pytest.mark.slow
def test_i33_x_a_reused_pid_does_not_keep_a_dead_trial_running(cli, here: Path) -> None:
    storage = f"sqlite:///{here / 'stale.db'}"
    study = optuna.create_study(storage=storage, study_name="tiny-tune", direction="minimize")
    stale = study.ask()  # a trial whose process died; its pid now belongs to a live process (this one)
    for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "started": "another-boot:1"}.items():
        stale.set_user_attr(key, value)
    code, out, err = cli(
        "tune", "tiny.toml", *LR, "--trials", "1", *ONE_EPOCH, "--storage", storage, "--study-name", "tiny-tune"
    )
    assert code == 0, err
    states = [t.state.name for t in optuna.load_study(study_name="tiny-tune", storage=storage).trials]
    assert states == ["FAIL", "COMPLETE"]
    assert "interrupted" in trials_csv(Path(summary_of(out)["study_dir"]))[0]["error"]
