"""What a ``vitkit tune`` study searches and ranks on: its ``Settings`` (from the recipe's ``[tune]`` table and
the command line, checked) and a trial's metric, after each epoch and at the end. No torch, no Optuna."""

from __future__ import annotations

import dataclasses
from typing import Any

from vitkit.commands.tune.space import Param, check_space, parse_space
from vitkit.errors import UserError
from vitkit.recipe import Recipe

DEFAULT_METRIC = "best_val_loss"
# summary.json keys a study may rank on (test_* never: the test split is scored for the best trial only)
SUMMARY_METRICS = (
    "best_val_acc", "final_val_acc", "final_ema_val_acc", "final_train_loss", "best_epoch", "params",
    "train_img_per_s", "wall_time_s",
)  # fmt: skip
# measured on the trial's model after it trains (``tune.costs``): what a Pareto front trades accuracy against
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
