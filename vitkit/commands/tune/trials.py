"""A ``vitkit tune`` trial: its recipe, its training through ``fit_guarded`` (the one data path; loaded data
reused while the data-affecting keys stay the same), its report to the pruner after each epoch, its score
(validation only), and the loop that runs trials until the study has its count."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from vitkit.commands.tune.ranks import send, under_torchrun
from vitkit.commands.tune.report import counts
from vitkit.commands.tune.settings import COST_METRICS, Settings, final_value, running_value
from vitkit.commands.tune.space import with_values
from vitkit.commands.tune.study import fail_dead_trials, process_start, retry, trial_sampler, trial_slot
from vitkit.errors import UserError
from vitkit.plugins import hookimpl
from vitkit.recipe import Recipe


class TrialReporter:
    """A per-trial plugin: after each epoch, report the metric to Optuna and stop the run when the pruner says so
    (never after the run's last epoch, ``last``: stopping then saves nothing)."""

    def __init__(self, trial: Any, metric: str, pruner: str, last: int, on_epoch: Any = None) -> None:
        self.trial, self.metric, self.pruner, self.last, self.on_epoch = trial, metric, pruner, last, on_epoch
        self.pruned_at: int | None = None

    @hookimpl
    def vitkit_on_epoch_end(self, run: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.trial.set_user_attr("heartbeat", time.time())
        value = running_value(self.metric, run.history)
        if self.on_epoch is not None:
            self.on_epoch(self.trial.number, epoch, value)
        if value is None or self.pruner == "none":
            return
        self.trial.report(value, epoch)
        if epoch < self.last and self.trial.should_prune():
            self.pruned_at = epoch
            run.request_stop(f"pruned by the {self.pruner} pruner after epoch {epoch}")


class DataCache:
    """Loaded data by what shapes it (``data`` table, seed, input size, preprocessing): trials that change
    only the model or the optimisation reuse the splits already loaded, through the one data path."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def get(self, recipe: Recipe) -> Any:
        from vitkit.engine import build
        from vitkit.engine.device import select_device

        img_size, view = build.model_img_size(recipe), build.preprocessing(recipe)
        data = dataclasses.asdict(recipe.data)
        for key in ("batch_size", "eval_batch_size", "num_workers"):
            data.pop(key)
        key = json.dumps([data, recipe.seed, img_size, repr(view), recipe.train.device], sort_keys=True, default=str)
        if key not in self.loaded:
            device = select_device(recipe.train.device)
            self.loaded[key] = build.load_dataset(recipe, img_size, device, view=view)
        return self.loaded[key]


def trial_recipe(recipe: Recipe, settings: Settings, values: dict[str, Any], number: int, fold: int = 0) -> Recipe:
    """The recipe a trial trains: the searched values set, its own name, no per-trial plots (speed)."""
    extra = [f'name="{recipe.name}-trial{number}"', "output.plots=false"]
    if fold:
        extra.append(f'data.fold="{fold}/{settings.folds}"')
    return with_values(recipe, values, extra)


def run_trial(
    study: Any,
    trial: Any,
    recipe: Recipe,
    settings: Settings,
    study_dir: Path,
    plugins: Any,
    cache: DataCache,
    on_epoch: Any = None,
) -> None:
    """Sample the trial's values, train it (each fold with ``folds``), tell Optuna how it ended."""
    from optuna.trial import TrialState

    from vitkit.engine.fit import fit_guarded
    from vitkit.plugins import new_manager
    from vitkit.runs.layout import read_metrics

    slot = trial_slot(study, trial)
    trial.set_user_attr("slot", slot)
    study.sampler = trial_sampler(settings, slot)  # before the first suggest: the draw is the slot's own
    values = {param.key: param.suggest(trial) for param in settings.space}
    plugins = plugins or new_manager()
    run_dir = (study_dir / "trials" / f"{trial.number:04d}").resolve()
    trial.set_user_attr("run_dir", str(run_dir))
    scores: list[list[float]] = []  # per fold: one value per metric
    epochs, pruned, costs = 0, False, {}
    folds = range(1, settings.folds + 1) if settings.folds else [0]
    try:
        for fold in folds:
            this = trial_recipe(recipe, settings, values, trial.number, fold)
            where = run_dir / f"fold{fold}" if fold else run_dir
            pruner = "none" if fold else settings.pruner  # folds: judged after each fold, below
            reporter = TrialReporter(trial, settings.metric, pruner, this.train.epochs, on_epoch)
            plugins.register(reporter, "vitkit_tune_trial")
            if under_torchrun():  # every rank trains it; the pruner's stop reaches them through the trainer
                send(this)
            try:
                summary = fit_guarded(this, run_dir=where, plugins=plugins, data=cache.get(this), score_test=False)
            finally:
                plugins.unregister(name="vitkit_tune_trial")
            history = read_metrics(where)
            epochs += int(summary["epochs_run"])
            wanted = [m for m in settings.metrics if m in COST_METRICS and m not in costs]
            if wanted:  # the model's, the same for every fold
                from vitkit.commands.tune.costs import model_costs

                costs.update(model_costs(this, cache.get(this), wanted))
            scores.append([costs[m] if m in costs else final_value(m, summary, history) for m in settings.metrics])
            if reporter.pruned_at is not None:
                pruned = True
                _mark_pruned(where, reporter.pruned_at, settings.pruner)
                break
            if fold and not settings.multi:  # cross-validation: the pruner compares the running mean per fold
                trial.report(_mean(scores)[0], fold)
                if settings.pruner != "none" and fold < settings.folds and trial.should_prune():
                    pruned = True
                    break
    except UserError as err:  # e.g. a sampled value that diverges: this trial failed, the study goes on
        trial.set_user_attr("error", str(err))
        trial.set_user_attr("epochs", epochs)
        study.tell(trial, state=TrialState.FAIL)
        return
    except BaseException as err:  # Ctrl-C, a bug: never counted as finished; its values run again first
        trial.set_user_attr("error", f"interrupted ({type(err).__name__})")
        trial.set_user_attr("void", True)
        study.tell(trial, state=TrialState.FAIL)
        retry(study, _trial(study, trial.number))
        raise
    trial.set_user_attr("epochs", epochs)
    values = _mean(scores)
    trial.set_user_attr("value", values[0])
    trial.set_user_attr("values", values)
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, values if settings.multi else values[0])


def _mean(scores: list[list[float]]) -> list[float]:
    """The mean over folds of each metric."""
    return [sum(column) / len(column) for column in zip(*scores, strict=True)]


def _mark_pruned(run_dir: Path, epoch: int, pruner: str) -> None:
    """The pruned run's ``summary.json`` says so (``vitkit runs`` lists it as pruned)."""
    from vitkit.runs.checkpoint import atomic_write_text

    path = run_dir / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(status="pruned", pruned_after_epoch=epoch, pruner=pruner)
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")


def work(
    study: Any,
    recipe: Recipe,
    settings: Settings,
    study_dir: Path,
    plugins: Any = None,
    on_epoch: Any = None,
    on_trial: Any = None,
) -> None:
    """Run trials until the study has ``settings.trials`` finished (with the ones other workers run)."""
    from optuna.trial import TrialState

    cache, failures = DataCache(), 0
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    while True:
        fail_dead_trials(study)
        now = counts(study)
        if now["finished"] + now["running"] >= settings.trials:
            return
        trial = study.ask()  # a queued trial first (an interrupted one's retry, or one enqueued with Optuna)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("started", process_start(os.getpid()))
        trial.set_user_attr("heartbeat", time.time())
        ahead = [t for t in study.get_trials(deepcopy=False, states=counted) if t.number < trial.number]
        if len(ahead) >= settings.trials:  # another worker took the last place meanwhile
            trial.set_user_attr("error", "not run: the study already had its trials")
            trial.set_user_attr("void", True)
            study.tell(trial, state=TrialState.FAIL)
            return
        run_trial(study, trial, recipe, settings, study_dir, plugins, cache, on_epoch)
        state = _trial(study, trial.number).state
        if on_trial is not None:
            on_trial(trial.number, state)
        if state == TrialState.FAIL:
            failures += 1
            if failures >= max(3, settings.trials):
                error = _trial(study, trial.number).user_attrs.get("error", "?")
                raise UserError(
                    f"vitkit tune: {failures} trials failed in this process (last: {error}); see trials.csv"
                )


def _trial(study: Any, number: int) -> Any:
    """The stored (frozen) trial ``number``."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)
