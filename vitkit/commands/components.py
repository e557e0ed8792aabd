"""``vitkit list KIND [PATTERN]`` (the registered components) and ``vitkit plugins [RECIPE]`` (what each
loaded plugin registered)."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import load_plugins

REGISTRY_KINDS = (
    "models",
    "attention",
    "augmentations",
    "optimizers",
    "schedulers",
    "datasets",
    "losses",
    "pos_embed",
    "mlp",
)


def add_list_arguments(ls: argparse.ArgumentParser) -> None:
    ls.add_argument("kind", choices=REGISTRY_KINDS, help="which registry")
    ls.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit_*'")


def list_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vitkit.registry import REGISTRIES

    load_plugins(args)
    entries = REGISTRIES[args.kind].entries(args.pattern)
    table = Table(title=f"{args.kind} ({len(entries)})")
    table.add_column("name", style="bold")
    table.add_column("from")
    table.add_column("description")
    for entry in entries:
        table.add_row(entry.name, entry.origin, entry.doc)
    Console().print(table)
    return 0


def add_plugins_arguments(pl: argparse.ArgumentParser) -> None:
    pl.add_argument("recipe", nargs="?", help="also load this recipe's `plugins`")


def plugins_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vitkit.recipe import load_recipe

    recipe = load_recipe(args.recipe) if args.recipe else None
    _, loaded = load_plugins(args, recipe)
    table = Table(title=f"plugins ({len(loaded)})")
    table.add_column("name", style="bold")
    table.add_column("source", overflow="fold")
    table.add_column("components", overflow="fold")
    table.add_column("hooks", overflow="fold")
    for plugin in loaded:
        components = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in plugin.components.items())
        table.add_row(plugin.name, plugin.source, components or "-", "\n".join(plugin.hooks) or "-")
    Console().print(table)
    if not loaded:
        print("no plugins loaded: install one (entry point group 'vitkit'), name it in a recipe or use --plugin")
    return 0


COMMANDS = (
    Command("list", "list registered components", add_list_arguments, list_main),
    Command("plugins", "list loaded plugins and the components each registered", add_plugins_arguments, plugins_main),
)
