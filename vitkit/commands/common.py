"""What several commands share on the command line: the plugin flags, loading plugins, ``--set``. No torch."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluggy import PluginManager

    from vitkit.plugin_loader import LoadedPlugin
    from vitkit.recipe import Recipe


def add_plugin_flags(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE_OR_PATH`` (repeatable) and ``--no-plugins``."""
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="load a plugin module or .py file (repeatable)",
    )
    parser.add_argument(
        "--no-plugins", action="store_true", help="do not load plugins installed as entry points (group 'vitkit')"
    )


def add_overrides(parser: argparse.ArgumentParser, help: str = "override a recipe key") -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def load_plugins(args: argparse.Namespace, recipe: Recipe | None = None) -> tuple[PluginManager, list[LoadedPlugin]]:
    """The plugin manager and loaded plugins: entry points, then the recipe's, then ``--plugin``."""
    from vitkit.plugin_loader import allow_entry_points
    from vitkit.plugin_loader import load_plugins as load

    allow_entry_points(not args.no_plugins)
    return load(
        recipe.plugins if recipe else (),
        args.plugins,
        entry_points=not args.no_plugins,
        recipe_file=str(recipe.source) if recipe and recipe.source else "recipe",
    )
