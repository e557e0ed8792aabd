"""``vitkit tune`` (issue #28): tiny digits studies on CPU, run through the CLI: in this process, or in a subprocess
where the process is the point (a kill, a Ctrl-C, --jobs workers, two processes on one storage, torchrun)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
optuna = pytest.importorskip("optuna")

RECIPE = """
name = "tiny"
[model]
name = "vit_nano_patch4_16"
depth = 1
embed_dim = 32
num_heads = 2
[data]
dataset = "digits"
batch_size = 64
[optimizer]
name = "adamw"
lr = 3e-3
[train]
epochs = 2
threads = 1
"""
SPACE = ["--space", "optimizer.lr=loguniform(1e-3,3e-2)", "--space", "optimizer.weight_decay=uniform(0,0.1)"]
ONE_EPOCH = ["--set", "train.epochs=1"]


def vitkit(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=900
    )


def trials_csv(study_dir: Path) -> list[dict[str, str]]:
    with open(study_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def study_dirs(cwd: Path, name: str = "tiny") -> list[Path]:
    return sorted((cwd / "runs" / f"{name}-tune").iterdir())


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture
def here(tmp_path: Path, recipe: Path, monkeypatch) -> Path:
    """tmp_path, with the tiny recipe in it, as the working directory of in-process commands."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One finished 3-trial study (no pruning), shared by the tests that read its outputs (run in this process)."""
    from vitkit.cli import main

    cwd = tmp_path_factory.mktemp("study")
    (cwd / "tiny.toml").write_text(RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        assert main(["tune", "tiny.toml", *SPACE, "--trials", "3", "--pruner", "none", "--seed", "7"]) == 0
    return study_dirs(cwd)[0]


@pytest.mark.parametrize(
    "space, says",
    [
        ("optimizer.lr=loguniform(0,1)", "loguniform bounds must be > 0"),
        ("optimizer.lr=gauss(1,2)", "unknown distribution 'gauss'"),
        ("optimizer.lr=uniform(3,1)", "low < high"),
        ("train.epochs=int(0,3)", "train.epochs: expected a value >= 1"),
        ("train.epoch=int(1,3)", "unknown key 'train.epoch'"),
        ("optimizer.lr", "expected KEY=loguniform"),
    ],
)
def test_i28_1_bad_space_is_one_line_exit_2(cli, recipe: Path, space: str, says: str) -> None:
    code, out, err = cli("tune", recipe, "--space", space, "--trials", "2")
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_i28_1_never_ranks_on_test_and_tune_table_is_validated(cli, recipe: Path, write_recipe) -> None:
    code, _, err = cli("tune", recipe, *SPACE, "--metric", "test_acc")
    assert code == 2 and "never ranks on the test split" in err
    bad = write_recipe(
        RECIPE + '[tune]\nspace = ["optimizer.lr=loguniform(1e-4,1e-2)"]\npruner = "medain"\n', "bad.toml"
    )
    code, _, err = cli("tune", bad)
    assert code == 2 and "tune.pruner: expected one of 'median'" in err


@pytest.mark.slow
def test_i28_1_seeded_study_reproduces_its_trials(cli, study: Path, monkeypatch) -> None:
    cwd = study.parents[2]
    monkeypatch.chdir(cwd)
    code, _, err = cli("tune", "tiny.toml", *SPACE, "--trials", "3", "--pruner", "none", "--seed", "7", "--new")
    assert code == 0, err
    first, second = trials_csv(study), trials_csv(study_dirs(cwd)[-1])
    assert study_dirs(cwd)[-1] != study and len(first) == len(second) == 3
    keys = ["number", "state", "optimizer.lr", "optimizer.weight_decay", "best_val_loss", "epochs_run"]
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    assert len({r["optimizer.lr"] for r in first}) == 3  # three different draws, not one repeated
    assert not any(k.startswith("test") for k in first[0])  # trials are never listed with a test number


@pytest.mark.slow
def test_i28_3_outputs_and_best_toml_reproduces_the_best_trial(cli, study: Path, monkeypatch) -> None:
    rows = trials_csv(study)
    best = min((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: float(r["best_val_loss"]))
    summary = json.loads((study / "tune_summary.json").read_text())
    assert summary["best"]["number"] == int(best["number"])
    for name in ("study.db", "best.toml", "history.png", "importance.png", "params.png", "tune.html"):
        assert (study / name).is_file(), name
    page = (study / "tune.html").read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    trial = json.loads((Path(best["run_dir"]) / "summary.json").read_text())
    cwd = study.parents[2]
    monkeypatch.chdir(cwd)
    code, _, err = cli("run", study / "best.toml")
    assert code == 0, err
    rerun = json.loads(next((cwd / "runs" / "tiny").glob("*/summary.json")).read_text())
    for key in ("best_val_acc", "best_epoch", "final_train_loss"):
        assert rerun[key] == trial[key], key
    assert rerun["test_acc"] == summary["best"]["test_acc"]  # the study's one test score is the rerun's
    with open(cwd / rerun["run_dir"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[rerun["best_epoch"] - 1]["val_loss"]) == pytest.approx(float(best["best_val_loss"]), rel=1e-5)


@pytest.mark.slow
def test_i28_a_trials_never_score_test_only_the_best_trial_once(study: Path) -> None:
    summary = json.loads((study / "tune_summary.json").read_text())
    runs = sorted((study / "trials").iterdir())
    assert len(runs) == 3
    for run in runs:  # no trial evaluated the test split while the study ran
        trial = json.loads((run / "summary.json").read_text())
        assert not any(key.startswith("test_") for key in trial), run
        assert trial["test"] == "not scored by this run"
    scored = [run for run in runs if (run / "eval_test.json").is_file()]
    assert scored == [Path(summary["best"]["run_dir"])]  # the chosen trial alone, scored after the study
    assert [run for run in runs if (run / "report_test.json").is_file()] == scored
    test = json.loads((scored[0] / "eval_test.json").read_text())
    assert test["split"] == "test" and test["count"] > 0
    assert summary["best"]["test_acc"] == test["test_acc"]
    assert f"{test['test_acc']:.4f}" in (study / "tune.html").read_text()


def _seeded_study(storage: str, params: list[dict[str, float]]) -> None:
    """A study made with Optuna, its first trials enqueued: ``vitkit tune --study-name tiny-tune`` joins it."""
    study = optuna.create_study(storage=storage, study_name="tiny-tune", direction="minimize")
    for values in params:
        study.enqueue_trial(values)


def study_name_of(study_dir: Path) -> str:
    return json.loads((study_dir / "tune.json").read_text())["study"]


@pytest.mark.slow
def test_i28_2_median_pruner_prunes_a_trial_far_behind(cli, tmp_path: Path, write_recipe, monkeypatch) -> None:
    # the space comes from the recipe's [tune] table; trials 0 and 1 learn, trial 2 (lr 1e-7) cannot
    three = RECIPE.replace("epochs = 2", "epochs = 3")  # judged after epoch 2: the first after the first half
    write_recipe(three + '[tune]\nspace = ["optimizer.lr=loguniform(1e-7,3e-2)"]\ntrials = 3\n', "tiny.toml")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    good, bad = {"optimizer.lr": 2e-2}, {"optimizer.lr": 1e-7}
    _seeded_study(storage, [good, good, bad])
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("tune", "tiny.toml", "--storage", storage, "--pruner", "median", "--study-name", "tiny-tune")
    assert code == 0, err
    rows = trials_csv(study_dirs(tmp_path)[0])
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [r["epochs_run"] for r in rows] == ["3", "3", "2"]
    summary = json.loads((Path(rows[2]["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs_run"] == 2
    code, out, _ = cli("runs", tmp_path / "runs", "--json")
    status = {Path(r["run_dir"]).name: r["status"] for r in json.loads(out)}
    assert status == {"0000": "finished", "0001": "finished", "0002": "pruned"}


@pytest.mark.slow
def test_i28_4_two_processes_on_one_storage_share_the_study(tmp_path: Path, recipe: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ["tune", "tiny.toml", *SPACE, "--trials", "3", *ONE_EPOCH, "--pruner", "none", "--storage", storage]
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "vitkit", *args], cwd=tmp_path, env=environ, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()
    [name] = optuna.get_all_study_names(storage)  # the same command: the same study (its name, its fingerprint)
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.trials if t.state.name == "COMPLETE"]
    ran = [t for t in study.trials if t.user_attrs.get("run_dir")]
    assert len(finished) == 3 and len(ran) == 3  # no fourth trial started
    assert len({t.user_attrs["run_dir"] for t in ran}) == 3
    assert len({(t.params["optimizer.lr"], t.params["optimizer.weight_decay"]) for t in ran}) == 3


@pytest.mark.slow
@pytest.mark.parametrize("signal, code", [("KILL", -9), ("INT", 130)])
def test_i28_4_killed_study_continues_to_the_requested_count(cli, here: Path, signal, code) -> None:
    args = ["tune", "tiny.toml", *SPACE, "--trials", "2", *ONE_EPOCH, "--pruner", "none"]
    killed = vitkit(here, *args, env={"VITKIT_TEST_SIGNAL_AT": f"1:2:{signal}"})  # trial 0, epoch 1, step 2
    assert killed.returncode == code
    if signal == "INT":  # Ctrl-C: one line that says how to continue
        assert "run the same command to continue it" in killed.stderr and "Traceback" not in killed.stderr
    done, out, err = cli(*args)  # the same command again, in this process
    assert done == 0, err
    assert "continuing study tiny-tune" in out
    [study] = study_dirs(here)  # the same folder, the same study
    rows = trials_csv(study)
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert "interrupted" in rows[0]["error"]


@pytest.mark.slow
def test_i28_4_jobs_split_threads_between_workers(cli, here: Path, monkeypatch) -> None:
    from vitkit.engine.threads import cores

    (here / "tiny.toml").write_text(RECIPE.replace("threads = 1\n", ""))  # torch's default: every core, unless split
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the two worker processes import this vitkit
    code, _, err = cli("tune", "tiny.toml", *SPACE, "--trials", "2", *ONE_EPOCH, "--pruner", "none", "--jobs", "2")
    assert code == 0, err
    [study] = study_dirs(here)
    rows = trials_csv(study)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    threads = {json.loads((Path(r["run_dir"]) / "summary.json").read_text())["threads"] for r in rows}
    assert threads == {max(1, cores() // 2)}
    assert (study / "worker0.log").is_file() and (study / "worker1.log").is_file()


@pytest.mark.slow
def test_i28_5_compare_tune_gives_each_variant_the_same_budget(cli, here: Path) -> None:
    out = here / "cmp"
    code, _, err = cli(
        "compare", "tiny.toml", "--vary", "model.depth=1,2", "--tune", "2", *ONE_EPOCH,
        "--space", "optimizer.lr=loguniform(1e-3,3e-2)", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "compare.json").read_text())
    assert report["tune"] == 2 and len(report["rows"]) == 2
    first_draws = []
    for row in report["rows"]:
        tuned = row["tuned"]
        study = optuna.load_study(
            study_name=study_name_of(Path(tuned["study_dir"])), storage=f"sqlite:///{tuned['study_dir']}/study.db"
        )
        states = [t.state.name for t in study.trials]
        assert len(states) == 2 and set(states) <= {"COMPLETE", "PRUNED"}  # the same budget: 2 finished trials
        first_draws.append(study.trials[0].params["optimizer.lr"])
        [run] = row["runs"]
        trained = (Path(run["run_dir"]) / "recipe.toml").read_text()
        assert f"lr = {tuned['params']['optimizer.lr']!r}" in trained  # the final run trains the tuned value
    assert first_draws[0] == first_draws[1]  # the same sampler seed for every variant
    assert "Tuned values" in (out / "compare.html").read_text()


def _dominates(a: list[float], b: list[float], signs: list[float]) -> bool:
    """``a`` at least as good as ``b`` on every metric and better on one (signs: +1 maximize, -1 minimize)."""
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b, strict=True)]
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


@pytest.mark.slow
def test_i28_b_multi_objective_study_writes_a_pareto_front(cli, here: Path) -> None:
    metrics = ["best_val_acc", "gmacs", "infer_img_per_s"]
    code, out, err = cli(
        "tune", "tiny.toml", "--space", "model.depth=int(1,3)", "--space", "model.embed_dim=choice(16,32)",
        *(arg for m in metrics for arg in ("--metric", m)), "--trials", "3", *ONE_EPOCH,
    )  # fmt: skip
    assert code == 0, err
    assert "best_val_acc (maximize), gmacs (minimize), infer_img_per_s (maximize); pruner none" in out
    study = study_dirs(here)[0]
    rows = [r for r in trials_csv(study) if r["state"] == "COMPLETE"]
    assert len(rows) == 3
    scores = {int(r["number"]): [float(r[m]) for m in metrics] for r in rows}
    by_arch = {(r["model.depth"], r["model.embed_dim"]): float(r["gmacs"]) for r in rows}
    assert len(set(by_arch.values())) == len(by_arch)  # the compute of each architecture, counted
    assert all(v > 0 for v in scores.values() for v in v[1:])
    signs = [1.0, -1.0, 1.0]
    expected = {n for n, v in scores.items() if not any(_dominates(w, v, signs) for w in scores.values())}
    summary = json.loads((study / "tune_summary.json").read_text())
    assert summary["best"] is None and summary["metrics"] == metrics
    assert {p["number"] for p in summary["front"]} == expected
    with open(study / "front.csv", newline="") as f:
        front = list(csv.DictReader(f))
    assert {int(r["number"]) for r in front} == expected
    for point in summary["front"]:  # one recipe per front point, its test accuracy scored once, apart
        assert point["values"] == dict(zip(metrics, scores[point["number"]], strict=True))
        text = (here / point["recipe"]).read_text()
        assert f"depth = {point['params']['model.depth']}" in text
        test = json.loads((Path(point["run_dir"]) / "eval_test.json").read_text())
        assert point["test_acc"] == test["test_acc"]
    others = [r for r in rows if int(r["number"]) not in expected]
    assert not any((Path(r["run_dir"]) / "eval_test.json").exists() for r in others)
    assert (study / "front.png").is_file() and "Pareto front" in (study / "tune.html").read_text()
    assert not (study / "best.toml").exists()  # no single best: the front is the answer


def test_i28_b_multi_objective_refuses_a_pruner_and_mismatched_directions(cli, recipe: Path) -> None:
    two = ["--metric", "best_val_acc", "--metric", "params"]
    code, _, err = cli("tune", recipe, *SPACE, *two, "--pruner", "median")
    assert code == 2 and "prunes single-objective studies only" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("tune", recipe, *SPACE, *two, "--direction", "maximize")
    assert code == 2 and "give one direction per metric" in err


@pytest.mark.slow
def test_i28_c_trials_under_torchrun_follow_rank_0_values_and_prune_decision(tmp_path: Path) -> None:
    from .test_distributed import _torchrun

    # each trial a different depth: a rank that trained other values than rank 0's would break DDP's model check
    space = '["optimizer.lr=loguniform(1e-7,3e-2)", "model.depth=int(1,3)"]'
    three = RECIPE.replace("epochs = 2", "epochs = 3")  # judged after epoch 2: the first after the first half
    (tmp_path / "tiny.toml").write_text(three + f"[tune]\nspace = {space}\ntrials = 3\n")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    good = {"optimizer.lr": 2e-2}
    _seeded_study(
        storage, [{**good, "model.depth": 1}, {**good, "model.depth": 2}, {"optimizer.lr": 1e-7, "model.depth": 3}]
    )
    args = ["tune", "tiny.toml", "--storage", storage, "--pruner", "median", "--study-name", "tiny-tune"]
    code, out, err = _torchrun(args, tmp_path)
    assert code == 0, err[-3000:]
    (study,) = study_dirs(tmp_path)  # one study folder: rank 1 wrote nothing
    rows = trials_csv(study)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert [r["epochs_run"] for r in rows] == ["3", "3", "2"]  # every rank stopped after epoch 2
    for row in rows:
        run = Path(row["run_dir"])
        summary = json.loads((run / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["epochs_run"] == int(row["epochs_run"])
        assert f"depth = {row['model.depth']}" in (run / "recipe.toml").read_text()
    assert json.loads((Path(rows[2]["run_dir"]) / "summary.json").read_text())["status"] == "pruned"
    assert json.loads((study / "tune_summary.json").read_text())["best"]["test_acc"] is not None


def test_i28_4_jobs_give_each_worker_its_own_gpu(tmp_path: Path, recipe: Path, monkeypatch) -> None:
    """Two visible GPUs, ``--jobs 2``: each worker process is started with one of them."""
    import vitkit.commands.compare.jobs
    from vitkit.commands.tune import command as tune

    started: list[str | None] = []

    class Worker:  # records the environment a worker starts with, then ends at once
        returncode = 0

        def __init__(self, cmd: list[str], env: dict[str, str], **kwargs: object) -> None:
            started.append(env.get("CUDA_VISIBLE_DEVICES"))

        def poll(self) -> int:
            return 0

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(vitkit.commands.compare.jobs, "gpu_slots", lambda: ["3", "5"])
    monkeypatch.setattr(tune.subprocess, "Popen", Worker)
    live = type("Live", (), {"refresh": lambda self: None})()
    tune._workers(tmp_path, 2, live)
    assert started == ["3", "5"]
