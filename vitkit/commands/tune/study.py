"""A ``vitkit tune`` study in its storage: the storage, the seeded sampler, the one prune plan, the study's
identity (``fingerprint``) and name, its folder, and the trials whose process is gone (marked FAIL and run
again, in the slot they held)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from vitkit.commands.tune.settings import FINGERPRINT_ATTR, KEY_ATTR, KEY_FILE, STALE_S, Settings
from vitkit.errors import UserError
from vitkit.recipe import Recipe


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


def trial_sampler(settings: Settings, slot: int) -> Any:
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
        sampler=trial_sampler(settings, 0),
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
    from vitkit.runs.layout import new_run_dir

    holder = dataclasses.replace(recipe, name=f"{recipe.name}-tune")
    folder = new_run_dir(holder)
    name = study_name or default_study_name(recipe, settings) + (f"-{folder.name}" if new else "")
    record = {
        "study": name, "fingerprint": mine, "storage": settings.storage, "key": settings.key(recipe),
        "recipe": recipe.to_dict(), "source": str(recipe.source or ""),
    }  # fmt: skip
    (folder / KEY_FILE).write_text(json.dumps(record, indent=1, default=str))
    return folder, name, False


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


def remember_trials(study_dir: Path, trials: int) -> None:
    """Record the requested count in the study folder (``--jobs`` workers read it)."""
    path = study_dir / KEY_FILE
    saved = json.loads(path.read_text())
    saved["trials"] = trials
    path.write_text(json.dumps(saved, indent=1))
