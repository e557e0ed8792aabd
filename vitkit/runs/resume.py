"""Resume: RNG state capture, checks that a run directory can continue, and restoring a trainer from it.

A run writes ``checkpoints/last.pt`` before its first epoch (epoch 0) and after every epoch, so a run
killed at any moment continues from the last complete epoch; the redone epoch is bit-identical on CPU
because the model, optimizer, scheduler, scaler and every RNG state (torch CPU and CUDA, Python,
NumPy) are restored as they were at the end of that epoch, and the loader's order depends only on
(seed, epoch). File-backed data (imagefolder streamed by workers) is exact too: its sampler orders each
epoch from (seed, epoch), per-sample augmentations in the workers draw from (seed, epoch, index), and the
DataLoader's worker seeds come from its own generator, so starting workers in a resumed process draws
nothing from the global RNG.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from vitkit.errors import UserError
from vitkit.recipe import Recipe, recipe_from_dict
from vitkit.runs.checkpoint import load_checkpoint, remove_stale_temp_files

STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng")


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every RNG state training draws from, as plain data and tensors (loadable with ``weights_only``)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "python": random.getstate(),
    }
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    except ImportError:
        pass
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Set the RNG states ``capture_rng`` recorded (older checkpoints may hold only ``torch``)."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def resume_state(run_dir: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and ``last.pt`` state of a run directory that can continue; otherwise a one-line why."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--resume {run_dir}: not a directory (expected runs/<name>/<time>/)")
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise UserError(f"--resume {run_dir}: not resumable: no checkpoints/last.pt (not a vitkit run directory?)")
    if (run_dir / "summary.json").is_file():
        raise UserError(f"--resume {run_dir}: this run already finished (summary.json exists); nothing to resume")
    state = load_checkpoint(last)
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise UserError(f"--resume {last}: not resumable: the checkpoint lacks {', '.join(missing)}")
    if not isinstance(state.get("recipe"), dict):
        raise UserError(f"--resume {last}: not resumable: the checkpoint holds no recipe")
    recipe = recipe_from_dict(state["recipe"], source=run_dir / "recipe.toml")
    from vitkit.data.folder import reuse_split

    reuse_split(recipe, run_dir)  # the same files in each split as before the interruption
    remove_stale_temp_files(last.parent)
    return recipe, state


def restore(trainer: Any, state: dict[str, Any]) -> tuple[int, float, float, int]:
    """Load ``state`` into ``trainer`` (a ``Trainer``) and its ``run.history``; returns (next epoch,
    best acc, best loss, best epoch). Call right before the epoch loop: the RNG states are set last."""
    from vitkit.engine import distributed as dist

    strategy = getattr(trainer, "strategy", "single")
    dist.load_full_state_dict(trainer.model, state["model"], strategy)
    dist.load_full_optimizer_state_dict(trainer.model, trainer.optimizer, state["optimizer"], strategy)
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    ema = getattr(trainer, "ema", None)
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    history = [dict(row) for row in state["history"]]
    trainer.run.history[:] = history
    plugins = getattr(trainer, "plugins", None)
    stopper = plugins.get_plugin("early_stopping") if plugins is not None else None
    if stopper is not None:  # its best value and bad-epoch count, as the uninterrupted run has them
        stopper.replay(history)
    best_epoch = int(state.get("best_epoch", 0))
    best_acc = float(state.get("best_val_acc", -1.0))
    loss_key = "ema_val_loss" if state.get("best_weights") == "ema" else "val_loss"  # the weights that won
    best_loss = float(history[best_epoch - 1][loss_key]) if 0 < best_epoch <= len(history) else math.inf
    trainer.saved_epoch = int(state["epoch"])
    rank, world = trainer.dist.rank, trainer.dist.world_size
    ranks = state.get("rng_ranks")  # a multi-process run's per-rank states; the same world size takes them
    restore_rng(ranks[rank] if ranks is not None and len(ranks) == world else state["rng"], trainer.device)
    return int(state["epoch"]) + 1, best_acc, best_loss, best_epoch
