"""vitkit: train, compare and use Vision Transformers for image classification.

Public API (torch is imported only when a name that needs it is first used):

- ``create_model(name, checkpoint_path=None, **overrides)``, ``list_models(pattern)``: registered
  models, ``timm/<name>`` for any timm model; weights from vitkit or timm files.
- ``Attention``: the base class of attention variants (override ``scores`` or ``attend``);
  ``vitkit.testing.check_attention(name_or_class)``: the checks a new attention should pass.
- ``register_model``, ``register_attention``, ``register_augmentation``, ``register_optimizer``,
  ``register_scheduler``, ``register_dataset``, ``register_loss``, ``register_pos_embed``,
  ``register_mlp``: decorators for new components.
- ``MODELS``, ``ATTENTION``, ... : the registries themselves (``Registry``).
- ``hookimpl``: marker for plugin lifecycle hooks (see ``vitkit.plugins``); ``load_plugins``:
  discover and import plugins (entry points, a recipe's ``plugins``, extra modules or paths).
- ``load_recipe(path, overrides)``: a validated ``Recipe``; ``train(recipe)``: run it, get the summary.
- ``load(run_dir_or_checkpoint)``: a ``Predictor``; ``.predict(images)`` classifies paths, bytes, PIL images, tensors.
- ``open_run(run_dir_or_file)``: a ``FinishedRun``: model, weights, temperature, classes, preprocessing,
  thresholds, recipe, and ``load_data()``, the run's splits as it trained on them.
- ``Command``: a ``vitkit`` subcommand (name, help, ``add_arguments``, ``main``) that a package declares in
  entry-point group ``vitkit.commands`` to add it to the CLI.
- ``compare(sources, vary, overrides, rank_by, out)``: train and rank variants (``vitkit compare``).
- ``lr_find(recipe, steps, start, end, out)``: the LR range test (``vitkit lr-find``); suggestions, curve.
- ``tune(recipe, space, trials=...)``: an Optuna study over recipe keys (``vitkit tune``); the study summary.
- ``UserError``: raised for mistakes in recipes, command lines and input files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitkit import plugin_loader as _plugin_loader  # noqa: F401  (an unknown registry name imports installed plugins)
from vitkit.commands import Command
from vitkit.errors import UserError
from vitkit.plugins import hookimpl
from vitkit.recipe import Recipe, load_recipe
from vitkit.registry import (
    ATTENTION,
    AUGMENTATIONS,
    DATASETS,
    LOSSES,
    MLP,
    MODELS,
    OPTIMIZERS,
    POS_EMBED,
    SCHEDULERS,
    Registry,
    register_attention,
    register_augmentation,
    register_dataset,
    register_loss,
    register_mlp,
    register_model,
    register_optimizer,
    register_pos_embed,
    register_scheduler,
)
from vitkit.runs.finished import FinishedRun, open_run

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from vitkit.commands.predict.predictor import Predictor


def create_model(name: str, checkpoint_path: str | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` (or any timm model as ``timm/<name>``); ``overrides``
    replace its configuration's values. ``checkpoint_path`` loads weights from a vitkit checkpoint,
    a vitkit ``model.safetensors`` or a timm state dict (converted, positions resized)."""
    from vitkit.models import create_model as _create

    return _create(name, checkpoint_path=checkpoint_path, **overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching an fnmatch ``pattern``, naturally sorted."""
    return MODELS.list(pattern)


def compare(
    sources: list[str],
    vary: list[str] | None = None,
    overrides: list[str] | None = None,
    rank_by: str = "test_acc",
    out: str | None = None,
) -> Any:
    """``vitkit compare`` from Python: train recipe variants (``vary``: ``"key=v1,v2"`` strings) or
    read finished run directories; returns the report folder (compare.csv, compare.json, plots)."""
    from vitkit.commands.compare.command import compare as _compare

    return _compare(sources, vary, overrides, rank_by, out)


def lr_find(
    recipe: Recipe,
    steps: int = 200,
    start: float = 1e-7,
    end: float = 10.0,
    out: str | Path | None = None,
    plugins: list[str] | tuple[str, ...] = (),
) -> Any:
    """``vitkit lr-find`` from Python: sweep the LR exponentially from ``start`` to ``end`` over ``steps``
    updates (weights restored after); returns an ``LRFindResult`` (``.suggestions``: ``valley``,
    ``steepest``); ``out``: folder for ``lr_find.png`` and ``lr_find.csv``."""
    from vitkit.engine.lr_finder import lr_find as _lr_find

    return _lr_find(recipe, steps, start, end, out, load_plugins(recipe, plugins))


def tune(
    recipe: Recipe,
    space: list[str] | tuple[str, ...] = (),
    trials: int | None = None,
    metric: str | list[str] | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    folds: int | None = None,
    storage: str | None = None,
    jobs: int = 1,
    new: bool = False,
    plugins: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """``vitkit tune`` from Python: search ``space`` (``"optimizer.lr=loguniform(1e-4,3e-3)"`` entries, added to
    ``recipe.tune.space``) over ``trials`` trials, ranked on validation; continues the same study when it exists
    (``new``: start afresh). Returns the study summary (``best``: values, score, run, best.toml, test accuracy
    reported apart; ``counts``; ``study_dir``; several ``metric``: ``front``, the Pareto front).
    Needs ``pip install "vitkit[tune]"``."""
    from vitkit.commands.tune.command import tune as _tune

    return _tune(
        recipe, list(space), trials, metric, None, None, pruner, seed, folds, storage, jobs, new,
        load_plugins(recipe, plugins),
    )  # fmt: skip


def load_plugins(
    recipe: Recipe | None = None, extra: list[str] | tuple[str, ...] = (), entry_points: bool = True
) -> Any:
    """Import plugins (entry points, ``recipe.plugins``, ``extra``); returns the pluggy manager."""
    from vitkit.plugin_loader import load_plugins as _load

    manager, _ = _load(
        recipe.plugins if recipe else (),
        extra,
        entry_points=entry_points,
        recipe_file=recipe.where() if recipe else "recipe",
    )
    return manager


def train(recipe: Recipe, plugins: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, validate and test ``recipe`` with its plugins (entry points, ``recipe.plugins``, ``plugins``).

    Returns the summary also written to ``summary.json``.
    """
    from vitkit.engine.trainer import Trainer

    return Trainer(recipe, plugins=load_plugins(recipe, plugins)).fit()


def load(path: str | Path, device: str = "auto", tta: str | None = None) -> Predictor:
    """A ``Predictor`` for a run directory, a ``best.pt``/``last.pt`` checkpoint or a ``model.safetensors``.

    ``vitkit.load("runs/digits/<run>").predict(["a.png", pil_image, tensor], topk=3)`` returns one
    ``Prediction`` per image (``label``, ``probability``, ``topk``, ``error``); probabilities are calibrated
    by the run's temperature, and averaged over test-time augmented views with ``tta="flip"|"crops"``.
    """
    from vitkit.commands.predict.predictor import Predictor

    return Predictor.load(path, device, tta)


def __getattr__(name: str) -> Any:
    """Lazy public names that import torch: ``Attention`` and the ``testing`` module."""
    if name == "Attention":
        from vitkit.layers.attention.base import Attention

        return Attention
    if name == "testing":
        import vitkit.testing

        return vitkit.testing
    raise AttributeError(f"module 'vitkit' has no attribute {name!r}")


__all__ = [
    "ATTENTION",
    "Attention",
    "AUGMENTATIONS",
    "Command",
    "DATASETS",
    "LOSSES",
    "MLP",
    "FinishedRun",
    "MODELS",
    "OPTIMIZERS",
    "POS_EMBED",
    "SCHEDULERS",
    "Recipe",
    "Registry",
    "UserError",
    "__version__",
    "compare",
    "create_model",
    "hookimpl",
    "list_models",
    "load",
    "load_plugins",
    "load_recipe",
    "lr_find",
    "open_run",
    "register_attention",
    "register_augmentation",
    "register_dataset",
    "register_loss",
    "register_mlp",
    "register_model",
    "register_optimizer",
    "register_pos_embed",
    "register_scheduler",
    "train",
    "tune",
]
