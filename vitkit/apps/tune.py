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

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vitkit.apps.tune_ranks import follow, is_follower, send, under_torchrun
from vitkit.apps.tune_report import counts
from vitkit.apps.tune_space import Param, check_space, parse_space, with_values
from vitkit.errors import RunInterrupted, UserError
from vitkit.plugins import hookimpl
from vitkit.recipe import Recipe, recipe_from_dict

DEFAULT_METRIC = "best_val_loss"
# summary.json keys a study may rank on (test_* never: the test split is scored for the best trial only)
SUMMARY_METRICS = (
    "best_val_acc", "final_val_acc", "final_ema_val_acc", "final_train_loss", "best_epoch", "params",
    "train_img_per_s", "wall_time_s",
)  # fmt: skip
# measured on the trial's model after it trains (``tune_costs``): what a Pareto front trades accuracy against
COST_METRICS = ("gmacs", "infer_img_per_s")
STALE_S = 1800.0  # a RUNNING trial of another machine without a heartbeat for this long is taken as dead
KEY_FILE = "tune.json"
KEY_FIELDS = ("metrics", "directions", "sampler", "pruner", "seed", "folds")  # with the recipe and space: the study
FINGERPRINT_ATTR = "vitkit_fingerprint"  # study user attrs: what the study searches (its hash, and the key itself)
KEY_ATTR = "vitkit_key"


@dataclasses.dataclass
class Settings:
    """What a study searches and how; ``key()`` is what makes two commands the same study (``storage``, where
    it lives, and ``trials``, how far it goes, are not part of it)."""

    space: list[Param]
    trials: int
    metrics: list[str]  # several: a multi-objective study (a Pareto front)
    directions: list[str]  # one per metric
    sampler: str
    pruner: str
    seed: int
    folds: int
    storage: str  # "" : study.db in the study folder

    @property
    def metric(self) -> str:
        """The first (with one metric: the) metric; the one trials report after each epoch."""
        return self.metrics[0]

    @property
    def direction(self) -> str:
        return self.directions[0]

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    def key(self, recipe: Recipe) -> dict[str, Any]:
        """What the study searches: the recipe (less how fast and where it writes), the space, the settings."""
        data = recipe.to_dict()
        data.pop("tune")
        data.pop("output")  # where runs go (a trial's own folder is under the study's), not what trains
        data["train"].pop("threads")  # how fast, not what
        return {
            "recipe": data,
            "space": [p.text() for p in self.space],
            **{k: getattr(self, k) for k in KEY_FIELDS},
        }


def settings_for(
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
) -> Settings:
    """The study's settings: the recipe's ``[tune]`` table, with what the caller gives on top, checked.
    Several metrics make a multi-objective study (``direction``: one per metric, or ``auto``)."""
    table = recipe.tune
    metrics = [metric] if isinstance(metric, str) else list(metric or [table.metric])
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    if not directions:
        directions = [table.direction] if len(metrics) == 1 else ["auto"]
    if directions == ["auto"]:
        directions = directions * len(metrics)
    if len(directions) != len(metrics):
        raise UserError(
            f"vitkit tune: {len(metrics)} --metric and {len(directions)} --direction: give one direction per "
            f"metric, in the same order (or none: auto)"
        )
    if len(set(metrics)) != len(metrics):
        raise UserError(f"vitkit tune --metric: {', '.join(metrics)}: a metric is named twice")
    if len(metrics) > 1:
        if pruner not in (None, "none"):
            raise UserError(
                f"vitkit tune --pruner {pruner}: Optuna prunes single-objective studies only; a study with "
                f"several --metric trains every trial in full"
            )
        pruner = "none"
    settings = Settings(
        space=parse_space(list(space), table.space),
        trials=table.trials if trials is None else trials,
        metrics=metrics,
        directions=directions,
        sampler=sampler or table.sampler,
        pruner=pruner or table.pruner,
        seed=table.seed if seed is None else seed,
        folds=table.folds if folds is None else folds,
        storage=table.storage if storage is None else storage,
    )
    check_space(recipe, settings.space)
    if settings.trials < 1:
        raise UserError(f"vitkit tune --trials {settings.trials}: expected at least 1")
    if settings.folds == 1 or settings.folds < 0:
        raise UserError(f"vitkit tune --folds {settings.folds}: expected K >= 2 (or 0: the usual split)")
    for metric in settings.metrics:
        if metric.startswith("test"):
            raise UserError(
                f"vitkit tune --metric {metric}: a study never ranks on the test split (it is scored once, for "
                f"the chosen trial); rank on {DEFAULT_METRIC} or best_val_acc"
            )
        if metric not in (DEFAULT_METRIC, *SUMMARY_METRICS, *COST_METRICS):
            raise UserError(
                f"vitkit tune --metric {metric!r}: expected {DEFAULT_METRIC} (the validation loss of the kept "
                f"epoch) or one of {', '.join((*SUMMARY_METRICS, *COST_METRICS))}"
            )
    settings.directions = [auto_direction(m) if d == "auto" else d for m, d in zip(metrics, directions, strict=True)]
    for name, value, allowed in (
        *(("--direction", d, ("minimize", "maximize")) for d in settings.directions),
        ("--sampler", settings.sampler, ("tpe", "random")),
        ("--pruner", settings.pruner, ("median", "hyperband", "none")),
    ):
        if value not in allowed:
            raise UserError(f"vitkit tune {name} {value!r}: expected one of {', '.join(allowed)}")
    return settings


def auto_direction(metric: str) -> str:
    """``auto``: minimize losses, times, sizes and compute; maximize accuracies and throughputs."""
    smaller = metric.endswith(("loss", "_s")) and not metric.endswith("img_per_s")
    return "minimize" if smaller or metric in ("params", "gmacs") else "maximize"


# ------------------------------------------------------------------------------------ the metric


def kept_epoch_loss(history: list[dict[str, Any]], epoch: int, weights: str) -> float:
    """The validation loss of the epoch whose weights a run kept (live or EMA)."""
    row = history[epoch - 1]
    return float(row["ema_val_loss" if weights == "ema" else "val_loss"])


def running_value(metric: str, history: list[dict[str, Any]]) -> float | None:
    """The metric so far, after each epoch (what the pruner sees): the trainer's rule for the kept epoch,
    highest val acc (live or EMA) and lowest loss among ties; ``None`` for metrics known only at the end."""
    if metric not in (DEFAULT_METRIC, "best_val_acc"):
        return None
    best: tuple[float, float] | None = None
    for row in history:
        for acc, loss in ((row.get("val_acc"), row.get("val_loss")), (row.get("ema_val_acc"), row.get("ema_val_loss"))):
            if acc is not None and (best is None or acc > best[0] or (acc == best[0] and loss < best[1])):
                best = (acc, loss)
    if best is None:
        return None
    return best[1] if metric == DEFAULT_METRIC else best[0]


def final_value(metric: str, summary: dict[str, Any], history: list[dict[str, Any]]) -> float:
    """The trial's score from its summary (never a test number)."""
    if metric == DEFAULT_METRIC:
        return kept_epoch_loss(history, summary["best_epoch"], summary.get("best_weights", "model"))
    value = summary.get(metric)
    if not isinstance(value, (int, float)):
        raise UserError(f"vitkit tune --metric {metric}: this run's summary.json has no number for it")
    return float(value)


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


# ------------------------------------------------------------------------------------ storage, study


def _storage(url: str, study_dir: Path) -> Any:
    """An Optuna storage for ``url`` (``""``: SQLite ``study.db`` in the study folder; a path ending in
    ``.log``/``.journal``: a journal file, e.g. on a shared filesystem)."""
    import optuna

    url = url or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url))
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as err:  # a bad URL, a missing driver, a server that does not answer
            # two processes creating one new database at once: one of them loses the race to create the
            # tables (IntegrityError on alembic_version, or "table ... already exists"); they exist now
            raced = type(err).__name__ in ("IntegrityError", "OperationalError") and (
                "alembic_version" in str(err) or "already exists" in str(err)
            )
            if not raced or attempt == 2:
                first = str(err).splitlines()[0]
                raise UserError(f"vitkit tune --storage {url}: {type(err).__name__}: {first}") from None
    raise AssertionError("unreachable")


def _sampler(settings: Settings, slot: int) -> Any:
    """The trial's sampler, seeded from the study seed and the trial's slot (``trial_slot``): a sequential
    study repeats its trials exactly, interrupted or not, and parallel workers never draw the same startup
    values."""
    import optuna

    seed = settings.seed * 100_003 + slot
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, min(10, settings.trials // 3))  # a small budget still gets to the model-based phase
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


@dataclasses.dataclass(frozen=True)
class PrunePlan:
    """The steps a trial reports to the pruner (epochs; folds with ``--folds``) and when it may be judged."""

    steps: int  # the most steps a trial reports: Hyperband's max_resource
    first_judged: int  # the first step the median pruner judges: the first after the first half of the steps


def prune_plan(recipe: Recipe, settings: Settings) -> PrunePlan:
    """The one place that sizes pruning. Steps: the folds with ``--folds`` (the pruner then compares the running
    mean after each fold), else ``train.epochs``, the largest value of its range when the study searches it (one
    plan for the whole study: Hyperband's brackets and the median pruner's warmup cannot change per trial, and
    a trial with fewer epochs is then judged later, or not at all). No trial is judged in its first half of
    steps (Optuna judges at ``step >= n_warmup_steps``; steps are 1-based epochs or folds), nor after its last
    step (``TrialReporter``: pruning then saves nothing)."""
    if settings.folds:
        steps = settings.folds
    else:
        searched = next((p for p in settings.space if p.key == "train.epochs"), None)
        steps = recipe.train.epochs if searched is None else int(searched.largest())
    return PrunePlan(steps=steps, first_judged=steps // 2 + 1)


def _pruner(settings: Settings, plan: PrunePlan) -> Any:
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(plan.steps, 2))
    # a third of the budget (2 to 5, Optuna's default) must finish before trials are compared, and no trial
    # is judged in its first half of epochs: warmup and a schedule's early LR make early losses misleading
    # (on digits, judging from epoch 1 or 7 of 20 pruned the recipes that won without pruning)
    startup = max(2, min(5, settings.trials // 3))
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=plan.first_judged)


def fingerprint(recipe: Recipe, settings: Settings) -> str:
    """The one identity of a study: a hash of ``settings.key(recipe)`` (recipe, space, metrics, directions,
    sampler, pruner, seed, folds). The study's default name, its folder lookup and the check of a named study
    all derive from it."""
    text = json.dumps(settings.key(recipe), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_study_name(recipe: Recipe, settings: Settings) -> str:
    """``<recipe name>-tune-<fingerprint>``: the same command finds the same study, in any storage."""
    return f"{recipe.name}-tune-{fingerprint(recipe, settings)}"


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    """The first key at which two study keys differ, with both values, for a one-line error."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            if old.get(k) != new.get(k):
                return _first_difference(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
    return f"{path or 'the study'}: {json.dumps(old, default=str)} there, {json.dumps(new, default=str)} here"


def open_study(recipe: Recipe, settings: Settings, study_dir: Path, name: str) -> Any:
    """Create or load the study ``name``. A study that exists must search what this command searches (its
    recorded fingerprint); one that vitkit did not make (no fingerprint, e.g. trials enqueued with Optuna) is
    joined and the fingerprint recorded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(settings.storage, study_dir)
    mine, key = fingerprint(recipe, settings), json.loads(json.dumps(settings.key(recipe), default=str))
    try:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        attrs = {}
    theirs = attrs.get(FINGERPRINT_ATTR)
    if theirs is not None and theirs != mine:
        where = settings.storage or str(study_dir / "study.db")
        raise UserError(
            f"vitkit tune: study {name} in {where} searches something else "
            f"({_first_difference(attrs.get(KEY_ATTR, {}), key)}); join it with the command that made it, or "
            f"drop --study-name for this command's own study"
        )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        directions=settings.directions,
        sampler=_sampler(settings, 0),
        pruner=_pruner(settings, prune_plan(recipe, settings)),
        load_if_exists=True,
    )
    directions = [d.name.lower() for d in study.directions]
    if directions != settings.directions:  # a study made with Optuna, say: its directions are stored
        raise UserError(
            f"vitkit tune: study {name} has directions {', '.join(directions)}, this command "
            f"{', '.join(settings.directions)} ({', '.join(settings.metrics)}): give --direction to match, or "
            f"another --study-name"
        )
    if theirs is None:
        study.set_user_attr(FINGERPRINT_ATTR, mine)
        study.set_user_attr(KEY_ATTR, key)
    return study


def find_study_dir(
    recipe: Recipe, settings: Settings, new: bool, study_name: str | None = None
) -> tuple[Path, str, bool]:
    """The study folder and the study's name: the latest ``runs/<name>-tune/<time>/`` of the same study (same
    fingerprint and storage, and the same name when ``study_name`` is given; continued), else a new one, whose
    study is ``default_study_name`` (``new``: a name of its own, with the folder's time, so ``--new`` always
    starts a new study, even in a shared storage) or ``study_name``. Returns (folder, study name, continued)."""
    parent = Path(recipe.output.dir) / f"{recipe.name}-tune"
    mine = fingerprint(recipe, settings)
    if not new and parent.is_dir():
        for folder in sorted(parent.iterdir(), reverse=True):
            try:
                saved = json.loads((folder / KEY_FILE).read_text())
            except (OSError, ValueError):
                continue
            same = saved.get("fingerprint") == mine and saved.get("storage") == settings.storage
            if same and study_name in (None, saved.get("study")):
                return folder, saved["study"], True
    from vitkit.engine.trainer import new_run_dir

    holder = dataclasses.replace(recipe, name=f"{recipe.name}-tune")
    folder = new_run_dir(holder)
    name = study_name or default_study_name(recipe, settings) + (f"-{folder.name}" if new else "")
    record = {
        "study": name, "fingerprint": mine, "storage": settings.storage, "key": settings.key(recipe),
        "recipe": recipe.to_dict(), "source": str(recipe.source or ""),
    }  # fmt: skip
    (folder / KEY_FILE).write_text(json.dumps(record, indent=1, default=str))
    return folder, name, False


# ------------------------------------------------------------------------------------ trials


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """What tells process ``pid`` from a later one given the same pid: the boot id and the start time in clock
    ticks since boot (Linux ``/proc``); ``None`` where the OS has no ``/proc``. (A stopgap: Optuna's heartbeat
    replaces the pid check later.)"""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces and brackets
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def _dead(trial: Any, now: float) -> bool:
    """A RUNNING trial whose process is gone: same machine and its pid no longer runs (or runs a later process:
    another start time), or no heartbeat for long."""
    attrs = trial.user_attrs
    if attrs.get("host") == socket.gethostname() and isinstance(attrs.get("pid"), int):
        if not _alive(attrs["pid"]):
            return True
        started, now_started = attrs.get("started"), process_start(attrs["pid"])
        return started is not None and now_started is not None and started != now_started
    beat = attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else now)
    return now - beat > STALE_S


def fail_dead_trials(study: Any) -> int:
    """Mark RUNNING trials whose process is gone (killed, power cut) as FAIL and queue their values to run
    again (``retry``); returns how many."""
    from optuna.trial import TrialState

    count, now = 0, time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead(trial, now):
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted (its process is gone)")
                study._storage.set_trial_user_attr(trial._trial_id, "void", True)
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except Exception:  # another worker marked it first (and queued its retry)
                continue
            retry(study, trial)
            count += 1
    return count


def trial_slot(study: Any, trial: Any) -> int:
    """The trial's place in the study an uninterrupted run makes, which seeds its sampler: a retry keeps the
    slot of the trial it reruns; any other trial's is its number less the void trials before it (interrupted,
    or not run), so the trials after an interruption draw what they would have drawn."""
    if isinstance(trial.user_attrs.get("slot"), int):
        return trial.user_attrs["slot"]
    void = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and t.user_attrs.get("void"))
    return trial.number - void


def retry(study: Any, trial: Any) -> None:
    """Queue an interrupted trial's values (and its slot) as the next trial the study asks for (Optuna's
    ``enqueue_trial``: the WAITING trial is handed to one worker only)."""
    slot = trial.user_attrs.get("slot")
    attrs = {"retry_of": trial.number, **({"slot": slot} if isinstance(slot, int) else {})}
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)


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
    from vitkit.run_dirs import read_metrics

    slot = trial_slot(study, trial)
    trial.set_user_attr("slot", slot)
    study.sampler = _sampler(settings, slot)  # before the first suggest: the draw is the slot's own
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
                from vitkit.apps.tune_costs import model_costs

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
    from vitkit.engine.checkpoint import atomic_write_text

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


# ------------------------------------------------------------------------------------ the command


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
    from vitkit.apps.tune_live import Live

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
    from vitkit.apps.tune_report import write_outputs

    return write_outputs(study, recipe, settings, study_dir)


def _workers(study_dir: Path, jobs: int, live: Any, threads: int = 0) -> None:
    """``jobs`` worker processes on the study, each with ``threads`` CPU threads (``--threads``; 0: the cores
    split between them) and one GPU each where several are visible; waits for all."""
    from vitkit.apps.compare_jobs import gpu_slots
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


def remember_trials(study_dir: Path, trials: int) -> None:
    """Record the requested count in the study folder (``--jobs`` workers read it)."""
    path = study_dir / KEY_FILE
    saved = json.loads(path.read_text())
    saved["trials"] = trials
    path.write_text(json.dumps(saved, indent=1))
