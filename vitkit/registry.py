"""One ``Registry`` class; each kind of component (models, attention, ...) is an instance of it."""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vitkit.errors import UnknownNameError, UserError

#: Name of the plugin whose import is under way; entries registered meanwhile are credited to it.
_current_origin: list[str] = []


@dataclass(frozen=True)
class Entry:
    """A registered component: its factory, one-line doc and the plugin (or "vitkit") that added it."""

    name: str
    factory: Callable[..., Any]
    origin: str

    @property
    def doc(self) -> str:
        text = inspect.getdoc(self.factory) or ""
        return text.strip().splitlines()[0] if text else ""


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


ON_UNKNOWN_NAME: list[Callable[[], bool]] = []
"""Called, in order, when a name is not registered; each returns whether it registered something
(``vitkit.plugin_loader`` adds the import of installed entry-point plugins)."""


UNKNOWN_NAME_HINTS: list[Callable[[str, str], str | None]] = []
"""Called with (kind, name) when a name stays unknown; the first line returned replaces the generic
advice (``vitkit.plugin_loader`` names an installed plugin that ``--no-plugins`` switched off)."""


class Registry:
    """Maps names to factories for one kind of component.

    Built-in entries live in ``modules`` and are imported on first use, so importing
    vitkit (or running ``vitkit --help``) does not import torch.
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._modules = modules
        self._entries: dict[str, Entry] = {}
        self._resolvers: dict[str, Callable[[str], Callable[..., Any]]] = {}
        self._loaded = not modules

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                importlib.import_module(module)

    def register(self, name: str | Callable[..., Any] | None = None, *, override: bool = False) -> Callable[..., Any]:
        """Decorator that registers a class or function, under ``name`` or its ``__name__``."""

        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name if isinstance(name, str) else factory.__name__, factory, override=override)
            return factory

        if callable(name):  # used bare: @register
            return add(name)
        return add

    def add(self, name: str, factory: Callable[..., Any], *, override: bool = False) -> None:
        """Register ``factory`` under ``name``; a taken name is an error unless ``override``."""
        self._load_builtins()
        origin = _current_origin[-1] if _current_origin else "vitkit"
        taken = self._entries.get(name)
        if taken is not None and not override:
            raise UserError(
                f"{self.kind} {name!r} is already registered by {taken.origin} (pass override=True to replace it)"
            )
        self._entries[name] = Entry(name, factory, origin)

    def add_resolver(self, prefix: str, resolve: Callable[[str], Callable[..., Any]]) -> None:
        """Names starting with ``prefix`` (``"timm/"``) not registered themselves are looked up on
        use: ``resolve(rest_of_name)`` returns the factory or raises ``UnknownNameError``."""
        self._resolvers[prefix] = resolve

    def get(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name first imports the installed entry-point plugins
        (once per process, not after ``--no-plugins``), then raises with close-match suggestions."""
        self._load_builtins()
        if name in self._entries:
            return self._entries[name]
        for prefix, resolve in self._resolvers.items():
            if name.startswith(prefix):
                return Entry(name, resolve(name[len(prefix) :]), prefix.rstrip("/:"))
        if any(load() for load in ON_UNKNOWN_NAME) and name in self._entries:  # an installed plugin not imported yet
            return self._entries[name]
        raise UnknownNameError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        for hint in UNKNOWN_NAME_HINTS:
            line = hint(self.kind, name)
            if line:
                return f"unknown {self.kind} {name!r}: {line}"
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; see `vitkit list {self.kind}`"

    def create(self, spec: str | dict[str, Any], /, **kwargs: Any) -> Any:
        """Build a component from a name or a ``{"name": ..., **kwargs}`` spec; ``kwargs`` win."""
        name, spec_kwargs = split_spec(spec)
        params = {**spec_kwargs, **{k: v for k, v in kwargs.items() if v is not None}}
        return self.get(name).factory(**params)

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, naturally sorted."""
        self._load_builtins()
        return sorted(fnmatch.filter(self._entries, pattern), key=_natural_key)

    def entries(self, pattern: str = "*") -> list[Entry]:
        return [self._entries[name] for name in self.list(pattern)]

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def split_spec(spec: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": "x", **kwargs}`` -> ``(name, kwargs)``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, dict) and isinstance(spec.get("name"), str):
        rest = dict(spec)
        return rest.pop("name"), rest
    raise UserError(f"a component is a name or a table with a 'name' key, got {spec!r}")


MODELS = Registry("models", ("vitkit.models",))
ATTENTION = Registry("attention", ("vitkit.layers.attention",))
AUGMENTATIONS = Registry("augmentations", ("vitkit.data.augment", "vitkit.data.sample_augment", "vitkit.data.mix"))
OPTIMIZERS = Registry("optimizers", ("vitkit.optim",))
SCHEDULERS = Registry("schedulers", ("vitkit.schedulers",))
DATASETS = Registry(
    "datasets", ("vitkit.data.datasets", "vitkit.data.torchvision_sets", "vitkit.data.webdataset", "vitkit.data.hf")
)
LOSSES = Registry("losses", ("vitkit.losses", "vitkit.distill"))
POS_EMBED = Registry("pos_embed", ("vitkit.layers.pos_embed",))
MLP = Registry("mlp", ("vitkit.layers.mlp",))

REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (MODELS, ATTENTION, AUGMENTATIONS, OPTIMIZERS, SCHEDULERS, DATASETS, LOSSES, POS_EMBED, MLP)
}

register_model = MODELS.register
register_attention = ATTENTION.register
register_augmentation = AUGMENTATIONS.register
register_optimizer = OPTIMIZERS.register
register_scheduler = SCHEDULERS.register
register_dataset = DATASETS.register
register_loss = LOSSES.register
register_pos_embed = POS_EMBED.register
register_mlp = MLP.register
