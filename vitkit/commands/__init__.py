"""vitkit's commands, one module or package each, every one declaring its own arguments beside its logic.

A command is a ``Command``: its name, help line, ``add_arguments(parser)`` and ``main(args) -> int``.
``cli.py`` builds the ``vitkit`` parser from ``commands()``: the built-in ones below, then those that
installed packages declare as entry points in group ``vitkit.commands`` (each pointing at a ``Command``),
so a plugin adds a command without touching vitkit. The module that declares a command imports no torch:
``vitkit --help`` and every ``vitkit CMD --help`` stay fast; the work is imported inside ``main``.

The tree (one package per command that needs more than one module)::

    run/        vitkit run (cli: the recipe or --resume; folder: the recipe for a folder of images)
    eval.py     vitkit eval
    predict/    vitkit predict, vitkit.load (predictor, command, attention_maps)
    export/     vitkit export and vitkit push (formats, hub_folder, model_card, push)
    compare/    vitkit compare (command, plan, jobs, report, tune)
    tune/       vitkit tune (study, trials, space, live, ranks, report, costs)
    bench/      vitkit bench (command, measure, memory, timm_twin)
    serve/      vitkit serve (server, batching, page)
    audit.py, lr_find.py, runs.py, shards.py, cache.py, new_plugin.py, components.py (list, plugins)

Commands use ``vitkit.runs`` (a finished run, opened once), ``vitkit.evaluation`` and ``vitkit.engine``;
none of those imports a command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass

ENTRY_POINT_GROUP = "vitkit.commands"

# in the order ``vitkit --help`` lists them
BUILTIN = (
    "vitkit.commands.run.cli",
    "vitkit.commands.eval",
    "vitkit.commands.predict.cli",
    "vitkit.commands.export.cli",
    "vitkit.commands.compare.cli",
    "vitkit.commands.bench.cli",
    "vitkit.commands.lr_find",
    "vitkit.commands.components",
    "vitkit.commands.new_plugin",
    "vitkit.commands.runs",
    "vitkit.commands.audit",
    "vitkit.commands.serve.cli",
    "vitkit.commands.tune.cli",
    "vitkit.commands.cache",
    "vitkit.commands.shards",
)


@dataclass(frozen=True)
class Command:
    """One ``vitkit`` subcommand: ``add_arguments`` declares its flags, ``main`` runs it (exit code).

    ``plugin_flags`` adds ``--plugin``/``--no-plugins``, read by ``commands.common.load_plugins``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]
    description: str | None = None
    plugin_flags: bool = True


def builtin_commands() -> list[Command]:
    """The commands vitkit ships, in help order (each module's ``COMMANDS``)."""
    found: list[Command] = []
    for module in BUILTIN:
        found.extend(importlib.import_module(module).COMMANDS)
    return found


def plugin_commands(taken: set[str]) -> list[Command]:
    """Commands installed packages declare (entry points in group ``vitkit.commands``), sorted by name.

    One that fails to load, is not a ``Command`` or reuses a name is skipped with one line on stderr:
    a broken plugin must not take every other command down with it."""
    found: list[Command] = []
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        label = f"{entry.value} ({entry.dist.name if entry.dist else 'entry point'})"
        try:
            command = entry.load()
        except Exception as err:  # noqa: BLE001 - any import error of a third-party module
            print(f"vitkit: warning: command {entry.name!r} from {label} failed to load: {err}", file=sys.stderr)
            continue
        if not isinstance(command, Command):
            print(f"vitkit: warning: {label} is not a vitkit.commands.Command; skipped", file=sys.stderr)
        elif command.name in taken:
            print(f"vitkit: warning: {label} declares command {command.name!r}, taken; skipped", file=sys.stderr)
        else:
            taken.add(command.name)
            found.append(command)
    return found


def commands() -> list[Command]:
    """Every command: the built-in ones, then the plugins'."""
    builtin = builtin_commands()
    return builtin + plugin_commands({c.name for c in builtin})
