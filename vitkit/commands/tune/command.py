"""``vitkit tune``: an Optuna study over recipe keys. Every trial trains through ``fit_guarded`` (the one data
path; the loaded data is reused while the data-affecting keys stay the same), reports its validation metric
after each epoch from a hook so the pruner can stop it, and is scored on validation only: no trial evaluates
the test split; the study scores the chosen trial's weights on it once, at the end, and reports that apart.

The study lives in an Optuna storage (default: ``study.db``, SQLite, in ``runs/<name>-tune/<time>/``) under a
name derived from what it searches (``fingerprint``); the same command continues it after a kill or Ctrl-C,
``--jobs N`` runs N worker processes on it, and any number of ``vitkit tune`` processes (other machines:
``--storage URL``) can share it. A trial counts once it is COMPLETE or PRUNED; an interrupted one is marked
FAIL, never counted, and its values run again as the next trial."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vitkit.commands.tune.ranks import follow, is_follower, send, under_torchrun
from vitkit.commands.tune.report import counts
from vitkit.commands.tune.settings import KEY_FIELDS, KEY_FILE, Settings, settings_for
from vitkit.commands.tune.space import parse_space
from vitkit.commands.tune.study import find_study_dir, open_study, remember_trials
from vitkit.commands.tune.trials import work
from vitkit.errors import RunInterrupted, UserError
from vitkit.recipe import Recipe, recipe_from_dict


def tune(
    recipe: Recipe,
    space: list[str] = (),
    trials: int | None = None,
    metric: str | list[str] | None = None,
    direction: str | list[str] | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    folds: int | None = None,
    storage: str | None = None,
    jobs: int = 1,
    new: bool = False,
    plugins: Any = None,
    study_name: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) a study on ``recipe``; returns its summary (also ``tune_summary.json``): the best
    trial's values, score and run, its test accuracy (reported apart), counts, and the study folder. Several
    ``metric``: a multi-objective study; ``front`` lists its Pareto front (``best`` is ``None``). ``new``:
    always a new study; ``study_name``: join (or create) that study on purpose, which must search the same."""
    from vitkit.extras import require

    require("tune", "optuna", what="vitkit tune")
    settings = settings_for(recipe, space, trials, metric, direction, sampler, pruner, seed, folds, storage)
    if jobs < 1:
        raise UserError(f"vitkit tune --jobs {jobs}: expected at least 1")
    if under_torchrun() and jobs > 1:
        raise UserError("vitkit tune --jobs under torchrun: every rank trains each trial; run one process per rank")
    if new and study_name:
        raise UserError(
            f"vitkit tune --new --study-name {study_name}: --new starts a study of its own, --study-name joins "
            f"one; give one of them"
        )
    if is_follower():  # a rank other than 0: it trains what rank 0 sends
        follow(recipe.train.device, plugins)
        return {}
    study_dir, name, continued = find_study_dir(recipe, settings, new, study_name)
    try:
        study = open_study(recipe, settings, study_dir, name)
    except UserError:
        if not continued:  # the folder made for it holds nothing yet; a later command must not find it
            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    remember_trials(study_dir, settings.trials)
    from vitkit.commands.tune.live import Live

    before = counts(study)
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(settings.metrics, settings.directions, strict=True))
    verb = "continuing" if continued or before["finished"] else "starting"
    print(
        f"vitkit tune {recipe.name}: {verb} study {name} -> {study_dir} "
        f"({before['finished']}/{settings.trials} trials finished; metric {objectives}; "
        f"pruner {settings.pruner}; {jobs} job{'s' * (jobs != 1)})",
        flush=True,
    )
    try:
        with Live(study, settings, study_dir) as live:
            if under_torchrun():  # every trial trains on all ranks; rank 0 runs the study
                from vitkit.engine.distributed import hold_group

                with hold_group(recipe.train.device):
                    work(study, recipe, settings, study_dir, plugins, live.epoch, live.trial_done)
                    send(None)  # the study has its trials: the other ranks return
            elif jobs == 1:
                work(study, recipe, settings, study_dir, plugins, live.epoch, live.trial_done)
            else:
                _workers(study_dir, jobs, live, recipe.train.threads)
    except KeyboardInterrupt:
        done = counts(study)["finished"]
        raise RunInterrupted(
            f"interrupted; the study keeps its {done} finished trials (the interrupted one is marked FAIL, never "
            f"counted, and its values run first when the study goes on): run the same command to continue it "
            f"({study_dir})"
        ) from None
    from vitkit.commands.tune.report import write_outputs

    return write_outputs(study, recipe, settings, study_dir)


def _workers(study_dir: Path, jobs: int, live: Any, threads: int = 0) -> None:
    """``jobs`` worker processes on the study, each with ``threads`` CPU threads (``--threads``; 0: the cores
    split between them) and one GPU each where several are visible; waits for all."""
    from vitkit.commands.compare.jobs import gpu_slots
    from vitkit.engine.threads import threads_per_job

    threads, gpus = threads_per_job(jobs, threads), gpu_slots()
    procs = []
    for index in range(jobs):
        log = open(study_dir / f"worker{index}.log", "w")  # noqa: SIM115 (closed after the worker ends)
        cmd = [sys.executable, "-m", "vitkit", "tune", "--worker", str(study_dir), "--threads", str(threads)]
        env = dict(os.environ)
        if len(gpus) > 1:  # one GPU each (round robin when there are more workers than GPUs)
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    try:
        while any(proc.poll() is None for proc, _ in procs):
            live.refresh()
            time.sleep(1.0)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait()
            log.close()
    failed = [i for i, (proc, _) in enumerate(procs) if proc.returncode != 0]
    if failed:
        tail = (study_dir / f"worker{failed[0]}.log").read_text().strip().splitlines()[-1:] or ["?"]
        raise UserError(f"vitkit tune: worker {failed[0]} stopped (exit {procs[failed[0]][0].returncode}): {tail[0]}")


def worker_main(study_dir: str, threads: int | None, plugins_for: Any) -> int:
    """``vitkit tune --worker DIR``: one worker of ``--jobs N`` (the study's recipe and settings from DIR)."""
    folder = Path(study_dir)
    saved = json.loads((folder / KEY_FILE).read_text())
    source = Path(saved["source"]) if saved.get("source") else None
    recipe = recipe_from_dict(saved["recipe"], source=source)
    if threads:
        recipe.train.threads = threads
    key = saved["key"]
    settings = Settings(
        space=parse_space(key["space"]), trials=saved["trials"], storage=saved["storage"],
        **{k: key[k] for k in KEY_FIELDS},
    )  # fmt: skip
    from vitkit.engine.console import console

    console.quiet = True
    study = open_study(recipe, settings, folder, saved["study"])
    work(study, recipe, settings, folder, plugins_for(recipe))
    return 0
