"""Plugin discovery: entry points in group ``vitkit``, then a recipe's ``plugins``, then ``--plugin``.

Each plugin is imported once per process (its components register as it is imported, credited
to it in the registries) and registered on the run's pluggy manager (its ``@vitkit.hookimpl``
functions are called). Any failure is a ``UserError`` naming the plugin, its source and the cause.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from vitkit import registry
from vitkit.errors import UserError
from vitkit.plugins import PROJECT, new_manager


@dataclass
class LoadedPlugin:
    """A plugin imported in this process: its name, where it came from and what it registered."""

    name: str
    source: str  # "entry point gated = vitkit_gated_attention", "recipe: /x/my.py", "--plugin my_mod"
    plugin: Any  # the module (or object) given to the plugin manager
    components: dict[str, list[str]] = field(default_factory=dict)  # registry kind -> names

    @property
    def hooks(self) -> list[str]:
        """Names of the lifecycle hooks it implements."""
        marker = f"{PROJECT}_impl"
        return sorted(n for n in dir(self.plugin) if hasattr(getattr(self.plugin, n, None), marker))


#: Every plugin imported in this process, by key (module name, object path or resolved file path).
_IMPORTED: dict[str, LoadedPlugin] = {}


def load_plugins(
    recipe_plugins: Iterable[str] = (),
    cli_plugins: Iterable[str] = (),
    *,
    entry_points: bool = True,
    recipe_file: str = "recipe",
    manager: pluggy.PluginManager | None = None,
) -> tuple[pluggy.PluginManager, list[LoadedPlugin]]:
    """Import and register plugins in discovery order; returns the manager and the loaded plugins.

    ``recipe_plugins`` are module names or (already resolved) ``.py`` paths from a recipe;
    ``cli_plugins`` the same from ``--plugin``; ``entry_points=False`` is ``--no-plugins``.
    ``recipe_file`` names the recipe in messages.
    """
    manager = manager or new_manager()
    loaded: list[LoadedPlugin] = []
    targets: list[tuple[str, Any]] = []  # (where it came from, what to load)
    if entry_points:
        targets += [(_entry_point_label(ep), ep) for ep in _installed_entry_points()]
    targets += [(f"{recipe_file}: plugins = {p}", p) for p in recipe_plugins]
    targets += [(f"--plugin {p}", p) for p in cli_plugins]
    if targets:
        for reg in registry.REGISTRIES.values():
            len(reg)  # import built-ins now, so none of them is credited to a plugin
    for label, target in targets:
        record = _import(target, label)
        if not manager.is_registered(record.plugin):
            _register(manager, record)
        if record not in loaded:
            loaded.append(record)
    return manager, loaded


def _installed_entry_points() -> list[Any]:
    """The entry points in group ``vitkit`` of the installed distributions, sorted by name."""
    return sorted(importlib.metadata.entry_points(group=PROJECT), key=lambda e: e.name)


def _entry_point_label(ep: Any) -> str:
    """Where an entry-point plugin comes from, e.g. ``entry point gated = vitkit_gated_attention in
    vitkit-gated-attention 0.1.0``."""
    package = f" in {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{package}"


def _is_entry_point(target: Any) -> bool:
    """An entry point from ``importlib.metadata``, or from the ``importlib_metadata`` backport (once a
    library such as mlflow imports the backport, ``entry_points()`` returns the backport's class)."""
    return not isinstance(target, str) and all(hasattr(target, a) for a in ("name", "value", "group", "load"))


def _import(target: Any, label: str) -> LoadedPlugin:
    """Import one plugin (an entry point, a module name or a ``.py`` path), once per process."""
    if _is_entry_point(target):
        key, name = target.value.strip(), target.name
    elif not isinstance(target, str) or not target.strip():
        raise UserError(f"{label}: expected a module name or a .py path, got {target!r}")
    elif target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise UserError(f"plugin {path.stem!r} ({label}): no such file {str(path)!r}")
        key, name = str(path.resolve()), path.parent.name if path.stem == "__init__" else path.stem
    else:
        key, name = target.strip(), target.strip()
    if key in _IMPORTED:
        return _IMPORTED[key]
    before = {kind: set(reg.list()) for kind, reg in registry.REGISTRIES.items()}
    registry._current_origin.append(name)
    try:
        if _is_entry_point(target):
            plugin = target.load()
        elif key.endswith(".py"):
            plugin = _import_path(Path(key))
        else:
            plugin = importlib.import_module(key)
    except Exception as err:  # a plugin's failure, whatever it is, is reported as the plugin's
        raise UserError(f"plugin {name!r} ({label}) failed to load: {_cause(err)}") from err
    finally:
        registry._current_origin.pop()
    components = {}
    for kind, reg in registry.REGISTRIES.items():
        added = [n for n in reg.list() if n not in before[kind] or reg.get(n).origin == name]
        if added:
            components[kind] = added
    record = LoadedPlugin(name, label, plugin, components)
    _IMPORTED[key] = record
    return record


def _import_path(path: Path) -> ModuleType:
    """Import a ``.py`` file under a module name unique to its location."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"vitkit_plugin_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _register(manager: pluggy.PluginManager, record: LoadedPlugin) -> None:
    """Put a plugin's hooks on the manager; a taken plugin name or a bad hook is the plugin's error."""
    taken = manager.get_plugin(record.name)
    if taken is not None:
        other = next((r.source for r in _IMPORTED.values() if r.plugin is taken), "another plugin")
        raise UserError(f"plugin {record.name!r} ({record.source}): the name is already taken by {other}")
    try:
        manager.register(record.plugin, name=record.name)
        manager.check_pending()
    except (ValueError, pluggy.PluginValidationError) as err:
        if manager.is_registered(record.plugin):
            manager.unregister(record.plugin)
        raise UserError(f"plugin {record.name!r} ({record.source}): {_cause(err)}") from err


def _cause(err: BaseException) -> str:
    """One line: the exception type and its message (a SyntaxError with file and line)."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    if isinstance(err, pluggy.PluginValidationError):
        return re.sub(r" in plugin <.*>$", "", " ".join(str(err).split()))
    message = " ".join(str(err).split())
    if isinstance(err, UserError):
        return message
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def imported_plugins() -> list[LoadedPlugin]:
    """Every plugin imported in this process so far, in import order."""
    return list(_IMPORTED.values())


# ------------------------------------------------------------------ plugins a model or a run needs

#: Whether installed entry points may be imported on demand in this process (``--no-plugins`` says no).
_ENTRY_POINTS_ON_DEMAND = [True]


def allow_entry_points(allowed: bool) -> None:
    """Set whether this process may import installed entry-point plugins on demand (``--no-plugins``)."""
    _ENTRY_POINTS_ON_DEMAND[0] = allowed


def load_entry_points() -> bool:
    """Import the installed entry-point plugins, once per process, unless ``--no-plugins`` was given;
    returns whether any was newly imported (registries call this on an unknown name, then look again)."""
    if not _ENTRY_POINTS_ON_DEMAND[0] or registry._current_origin:  # not from inside a plugin's import
        return False
    before = len(_IMPORTED)
    load_plugins()
    return len(_IMPORTED) > before


def switched_off_provider(kind: str, name: str) -> str | None:
    """After ``--no-plugins``: which installed entry-point plugin registers ``name`` in registry ``kind``,
    as the line an unknown-name error gives; read from the plugins' source, none of them imported."""
    if _ENTRY_POINTS_ON_DEMAND[0]:
        return None
    for ep in _installed_entry_points():
        if name in _registered_in_source(ep.value.split(":")[0].strip()).get(kind, set()):
            module = ep.value.split(":")[0].strip()
            return (
                f"it comes from the plugin {ep.name!r} ({_entry_point_label(ep)}), which --no-plugins "
                f"switched off; run without --no-plugins, or load just that one with --plugin {module}"
            )
    return None


def _registered_in_source(module: str) -> dict[str, set[str]]:
    """Registry kind -> names that ``module``'s source registers with vitkit's ``register_<kind>``
    decorators (a string argument, or the decorated name when used bare); the module is not imported."""
    kinds = {alias: fn.__self__.kind for alias, fn in vars(registry).items() if alias.startswith("register_")}
    found: dict[str, set[str]] = {}
    for path in _source_files(module):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            for dec in getattr(node, "decorator_list", []) if isinstance(node, ast.ClassDef | ast.FunctionDef) else []:
                if _called_name(dec) in kinds:  # bare: @vitkit.register_attention
                    found.setdefault(kinds[_called_name(dec)], set()).add(node.name)
            if isinstance(node, ast.Call) and _called_name(node.func) in kinds:
                arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.setdefault(kinds[_called_name(node.func)], set()).add(arg.value)
    return found


def _called_name(node: ast.AST) -> str | None:
    """``register_attention`` for ``vitkit.register_attention`` or ``register_attention``."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def _source_files(module: str) -> list[Path]:
    """The ``.py`` files of a module (every one under it for a package), found without importing it."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    places = [Path(p) for p in spec.submodule_search_locations or []]
    if not places:
        return [Path(spec.origin)] if not rest and spec.origin and spec.origin.endswith(".py") else []
    for part in rest:  # walk down to the submodule by path
        nested = [place / part for place in places if (place / part).is_dir()]
        if not nested:
            return [place / f"{part}.py" for place in places if (place / f"{part}.py").is_file()]
        places = nested
    return sorted(f for place in places for f in place.rglob("*.py"))


def load_run_plugins(plugins: Iterable[str] | None, source: str | Path) -> None:
    """Import what a saved run or model file needs to rebuild its model: the plugins its recipe
    named (``.py`` paths are absolute there) and, unless ``--no-plugins``, the installed entry points."""
    load_plugins(list(plugins or ()), entry_points=_ENTRY_POINTS_ON_DEMAND[0], recipe_file=str(source))


def record_cli_plugins(recipe: Any, cli_plugins: Iterable[str]) -> None:
    """Add ``--plugin`` modules and paths (made absolute) to ``recipe.plugins``, so the saved recipe
    of the run names every plugin it was trained with and predict/export/compare/load find them."""
    for entry in cli_plugins:
        resolved = str(Path(entry).expanduser().resolve()) if entry.endswith(".py") else entry
        if resolved not in recipe.plugins:
            recipe.plugins.append(resolved)


registry.ON_UNKNOWN_NAME.append(load_entry_points)  # an unknown name imports the installed plugins first
registry.UNKNOWN_NAME_HINTS.append(switched_off_provider)  # ... or, after --no-plugins, names the one that has it
