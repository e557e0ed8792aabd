"""vitkit: train, compare and use Vision Transformers for image classification.

Public API (torch is imported only when a name that needs it is first used):

- ``create_model(name, **overrides)``, ``list_models(pattern)``: registered models.
- ``register_model``, ``register_attention``, ``register_augmentation``, ``register_optimizer``,
  ``register_scheduler``, ``register_dataset``, ``register_loss``: decorators for new components.
- ``MODELS``, ``ATTENTION``, ... : the registries themselves (``Registry``).
- ``hookimpl``: marker for plugin lifecycle hooks (see ``vitkit.plugins``); ``load_plugins``:
  discover and import plugins (entry points, a recipe's ``plugins``, extra modules or paths).
- ``load_recipe(path, overrides)``: a validated ``Recipe``; ``train(recipe)``: run it, get the summary.
- ``UserError``: raised for mistakes in recipes, command lines and input files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vitkit.errors import UserError
from vitkit.plugins import hookimpl
from vitkit.recipe import Recipe, load_recipe
from vitkit.registry import (
    ATTENTION,
    AUGMENTATIONS,
    DATASETS,
    LOSSES,
    MODELS,
    OPTIMIZERS,
    SCHEDULERS,
    Registry,
    register_attention,
    register_augmentation,
    register_dataset,
    register_loss,
    register_model,
    register_optimizer,
    register_scheduler,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; ``overrides`` replace its configuration's values."""
    from vitkit.models import create_model as _create

    return _create(name, **overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching an fnmatch ``pattern``, naturally sorted."""
    return MODELS.list(pattern)


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


__all__ = [
    "ATTENTION",
    "AUGMENTATIONS",
    "DATASETS",
    "LOSSES",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "Recipe",
    "Registry",
    "UserError",
    "__version__",
    "create_model",
    "hookimpl",
    "list_models",
    "load_plugins",
    "load_recipe",
    "register_attention",
    "register_augmentation",
    "register_dataset",
    "register_loss",
    "register_model",
    "register_optimizer",
    "register_scheduler",
    "train",
]
