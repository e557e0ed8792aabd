"""The plugin API: pluggy hook specifications, the ``hookimpl`` marker and the plugin manager.

A plugin is a module. Importing it registers components (``@vitkit.register_attention(...)``
and the other decorators); functions marked ``@vitkit.hookimpl`` with the names below are
called at the matching moments of a run, on rank 0 only. Plugins are found through entry
points in group ``vitkit``, a recipe's ``plugins`` and ``--plugin`` (see ``vitkit.plugin_loader``
and docs/plugins.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from vitkit.engine.run import Run

PROJECT = "vitkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ------------------------------------------------------------------------------- run lifecycle


@hookspec
def vitkit_on_run_start(run: Run) -> None:
    """Called once before the first epoch (and again after ``--resume``).

    ``run`` exposes ``recipe``, ``model``, ``run_dir``, ``device``, ``classes`` and ``history``.
    """


@hookspec
def vitkit_on_epoch_end(run: Run, epoch: int, metrics: dict[str, Any]) -> None:
    """Called after each epoch's validation, with ``epoch`` counted from 1.

    ``metrics`` holds at least ``train_loss``, ``val_loss``, ``val_acc`` and ``lr``. Call
    ``run.request_stop("why")`` to end training after this epoch (early stopping does this).
    """


@hookspec
def vitkit_on_train_step(run: Run, epoch: int, step: int, lr: float, loss: Any) -> None:
    """Called after each optimizer update (once per ``grad_accum_steps`` batches), before the next batch.

    ``step`` counts updates over the whole run from 1; ``lr`` is the largest group LR this update
    used; ``loss`` is the last batch's loss as a detached tensor on the device (``float(loss)``
    waits for the device: read it every N steps, not every step). Keep it cheap: it runs in the loop.
    """


@hookspec
def vitkit_on_run_end(run: Run, summary: dict[str, Any]) -> None:
    """Called once after the test evaluation, with the dict written to ``summary.json``."""


@hookspec
def vitkit_on_run_failed(run: Run, error: BaseException, interrupted: bool) -> None:
    """Called once, instead of ``vitkit_on_run_end``, when a run that ``vitkit_on_run_start`` announced stops
    on an error or Ctrl-C, before that error reaches the caller.

    ``error`` is the exception the run stopped on (a ``KeyboardInterrupt`` for Ctrl-C); ``interrupted`` is
    True for Ctrl-C, False for an error. ``run.history`` holds the epochs that finished. Trackers mark the
    run failed or killed and close what they opened. What this hook raises is reported once and never
    replaces the run's own error. (A process killed outright, ``SIGKILL`` or a power cut, calls nothing.)
    """


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows vitkit's hook specifications."""
    import sys

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(sys.modules[__name__])
    return manager
