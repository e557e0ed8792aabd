"""Calling lifecycle hooks so that a failing plugin never loses a run.

``GuardedHooks(manager).vitkit_on_epoch_end(run=..., ...)`` calls every implementation in pluggy's
order, like ``manager.hook.vitkit_on_epoch_end(...)``, but an exception raised by a *plugin*
(anything not part of the ``vitkit`` package: entry points, a recipe's ``plugins``, ``--plugin``,
objects registered by a library user) is reported once per plugin and hook, on stderr, with the
plugin's name, the hook and the message; the other implementations still run and training goes on.

vitkit's own internal plugins (early stopping, defined in ``vitkit.*``) are not guarded: what they
raise is a user error (a bad ``train.early_stopping.metric``) or a bug, and stops the run as before.
Hooks with a wrapper implementation (``wrapper=True`` / ``hookwrapper=True``) are called through
pluggy itself, unguarded, since only pluggy can drive wrappers.

``call_on_failure`` calls a hook while the run is already stopping on another error
(``vitkit_on_run_failed``): there nothing escapes, internal plugins and wrappers included, so the run's
own error is the one that reaches the user.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import pluggy


def is_internal(plugin: Any) -> bool:
    """True for plugins defined inside the ``vitkit`` package (modules or instances of its classes)."""
    module = getattr(plugin, "__name__", None) if isinstance(plugin, type(sys)) else type(plugin).__module__
    return isinstance(module, str) and (module == "vitkit" or module.startswith("vitkit."))


class GuardedHooks:
    """``manager.hook``, with each plugin implementation's exceptions caught and reported once."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.failures: Counter[tuple[str, str]] = Counter()  # (plugin name, hook) -> times it raised

    def implemented(self, name: str) -> bool:
        """Whether any plugin implements hook ``name`` (callers skip preparing its arguments otherwise)."""
        return bool(getattr(self.manager.hook, name).get_hookimpls())

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("vitkit_"):
            raise AttributeError(name)
        return lambda **kwargs: self.call(name, **kwargs)

    def call(self, name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``name`` with ``kwargs``; returns the non-None results, as pluggy does."""
        return self._call(name, kwargs, failing=False)

    def call_on_failure(self, name: str, **kwargs: Any) -> None:
        """Call hook ``name`` while the run stops on another error: whatever any implementation raises
        (vitkit's own and wrappers too) is reported once, never raised."""
        try:
            self._call(name, kwargs, failing=True)
        except Exception as err:  # only from wrappers, which pluggy drives
            impls = getattr(self.manager.hook, name).get_hookimpls()
            wrappers = ", ".join(impl.plugin_name for impl in impls if impl.wrapper or impl.hookwrapper)
            self._report(wrappers, name, err, failing=True)

    def _call(self, name: str, kwargs: dict[str, Any], failing: bool) -> list[Any]:
        caller = getattr(self.manager.hook, name)
        impls = caller.get_hookimpls()
        if any(impl.wrapper or impl.hookwrapper for impl in impls):
            return caller(**kwargs)
        results = []
        for impl in reversed(impls):  # pluggy's call order: last registered (and tryfirst) first
            args = [kwargs[arg] for arg in impl.argnames]
            if is_internal(impl.plugin) and not failing:
                result = impl.function(*args)
            else:
                try:
                    result = impl.function(*args)
                except Exception as err:
                    self._report(impl.plugin_name, name, err, failing)
                    continue
            if result is not None:
                results.append(result)
        return results

    def _report(self, plugin: str, hook: str, err: Exception, failing: bool = False) -> None:
        self.failures[plugin, hook] += 1
        if self.failures[plugin, hook] > 1:
            return
        message = " ".join(str(err).split())
        cause = f"{type(err).__name__}: {message}" if message else type(err).__name__
        then = "the run's own error follows" if failing else "the run goes on"
        print(
            f"vitkit: warning: plugin {plugin!r} failed in {hook}: {cause} "
            f"({then}; further failures of this hook are not reported)",
            file=sys.stderr,
            flush=True,
        )
