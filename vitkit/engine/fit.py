"""``fit_guarded``: build a ``Trainer`` and run it, turning out-of-memory, a full disk, Ctrl-C, a lost
peer process and a collective that waited past ``train.wait_timeout`` into one message each, and leaving
``failed.json`` in a run that stopped on an error."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vitkit.engine import distributed
from vitkit.engine.distributed import peer_lost
from vitkit.engine.faults import DISK_ERRNOS, disk_full_error, out_of_memory_error, out_of_memory_types
from vitkit.engine.trainer import Trainer
from vitkit.errors import PeerLost, RunInterrupted, WaitTimedOut
from vitkit.recipe import Recipe
from vitkit.runs.failed import clear_failure, record_failure


def fit_guarded(
    recipe: Recipe,
    resume: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    plugins: Any = None,
    data: Any = None,
    score_test: bool = True,
) -> dict[str, Any]:
    """Build a ``Trainer`` and fit it (``resume``: a ``last.pt`` state to continue in ``run_dir``);
    out-of-memory, a full disk, Ctrl-C and a lost peer process each end with one message that says what
    was kept. A run that stops on an error leaves ``failed.json`` in its directory (``vitkit runs`` shows
    it). ``data``: the recipe's data when already loaded (``build.load_dataset``); ``score_test=False``: the
    run never evaluates the test split (a ``vitkit tune`` trial)."""
    if resume is not None and run_dir is not None:
        clear_failure(run_dir)
    built: list[Any] = []
    try:
        return _fit(recipe, resume, run_dir, plugins, built, data, score_test)
    except Exception as err:
        run = getattr(built[0], "run", None) if built else None
        if run is not None and built[0].dist.is_main:
            record_failure(run.run_dir, err, built[0].saved_epoch)
        raise


def _device_name(name: str) -> str:
    """The device ``train.device`` resolves to, for an error raised before the trainer has one."""
    from vitkit.engine.device import select_device

    try:
        return str(select_device(name))
    except Exception:  # the error being reported matters more than naming the device
        return name


def _fit(
    recipe: Recipe,
    resume: dict[str, Any] | None,
    run_dir: Path | None,
    plugins: Any,
    built: list[Any],
    data: Any,
    score_test: bool,
) -> dict[str, Any]:
    trainer: Trainer | None = None
    try:
        trainer = Trainer(recipe, plugins, data)
        trainer.score_test = score_test
        built.append(trainer)
        return trainer.fit(run_dir, resume=resume)
    except out_of_memory_types():
        device = getattr(trainer, "device", None) or _device_name(recipe.train.device)  # OOM while building
        raise out_of_memory_error(recipe, device, getattr(trainer, "batch_size", None)) from None
    except OSError as err:
        if err.errno not in DISK_ERRNOS:
            raise
        run = getattr(trainer, "run", None)
        raise disk_full_error(err, run.run_dir if run else run_dir, getattr(trainer, "saved_epoch", None)) from None
    except RuntimeError as err:
        several = trainer.dist.enabled if trainer is not None else distributed.launched_by_torchrun()
        if isinstance(err, PeerLost) or not several:
            raise
        if distributed.timed_out(err):
            raise wait_timeout_error(trainer, err) from None
        if trainer is None or not peer_lost(err):
            raise
        raise peer_lost_error(trainer, err) from err
    except KeyboardInterrupt:
        run = getattr(trainer, "run", None)
        saved = getattr(trainer, "saved_epoch", None)
        if run is None or saved is None:
            raise RunInterrupted("interrupted before training started; nothing was saved") from None
        raise RunInterrupted(
            f"interrupted; checkpoints/last.pt keeps epoch {saved} (the last complete epoch; a partial epoch "
            f"is redone): continue with  vitkit run --resume {run.run_dir}"
        ) from None


def wait_timeout_error(trainer: Trainer | None, err: BaseException) -> WaitTimedOut:
    """The one line a rank prints when a collective waited ``train.wait_timeout`` for the other ranks."""
    rank = trainer.dist.rank if trainer is not None else int(os.environ.get("RANK", "0"))
    saved = getattr(trainer, "saved_epoch", None)
    kept = "nothing was saved yet" if saved is None else f"checkpoints/last.pt keeps epoch {saved}"
    return WaitTimedOut(
        f"{distributed.timeout_message(rank)} (train.wait_timeout): another process of this run is stuck or that "
        f"far behind; {kept}. Every rank runs the same steps and evaluations, so a rank that never comes is stuck "
        f"before them (a hung DataLoader worker, a filesystem, a plugin hook on rank 0)"
    )


def peer_lost_error(trainer: Trainer, err: BaseException) -> PeerLost:
    """The one line a surviving rank prints when another process of the run is gone."""
    # gloo: "[.../pair.cc:545] Read error [10.0.0.2]:36052: Connection reset by peer. This is typically ..."
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    first_line = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0]
    run, saved = getattr(trainer, "run", None), trainer.saved_epoch
    kept = "nothing was saved yet" if run is None or saved is None else f"checkpoints/last.pt keeps epoch {saved}"
    resume = f"; or continue with  vitkit run --resume {run.run_dir}" if run is not None and saved is not None else ""
    return PeerLost(
        f"rank {trainer.dist.rank}: another process of this run is gone ({first_line}); {kept}. Under torchrun "
        f"--max-restarts=N the group restarts and the run continues{resume}"
    )
