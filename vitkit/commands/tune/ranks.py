"""A ``vitkit tune`` study under ``torchrun``: every trial trains on all ranks (the trainer's own process
group, DDP or FSDP, held across trials); rank 0 alone holds the study. It samples each trial's values and,
before each training run, sends the other ranks the recipe to train; the pruner runs on rank 0 too, and its
decision reaches every rank through the trainer's stop flag (``broadcast_flag``), so all ranks stop after the
same epoch. The other ranks write nothing; when the study has its trials, rank 0 sends ``None``."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from vitkit.errors import UserError
from vitkit.recipe import Recipe, recipe_from_dict


def under_torchrun() -> bool:
    from vitkit.engine.distributed import launched_by_torchrun

    return launched_by_torchrun()


def is_follower() -> bool:
    """A rank other than 0 of a ``torchrun`` launch: it trains what rank 0 sends."""
    return under_torchrun() and int(os.environ.get("RANK", "0")) != 0


def send(recipe: Recipe | None) -> None:
    """Rank 0: the recipe every rank trains next (``None``: the study is over)."""
    _broadcast(None if recipe is None else {"recipe": recipe.to_dict(), "source": str(recipe.source or "")})


def follow(device: str, plugins: Any) -> int:
    """A rank other than 0: train each recipe rank 0 sends, until it sends ``None``; returns how many."""
    from vitkit.engine.distributed import hold_group
    from vitkit.engine.fit import fit_guarded

    trained = 0
    with hold_group(device):
        while (message := _broadcast(None)) is not None:
            recipe = recipe_from_dict(message["recipe"], source=message["source"] or None)
            with contextlib.suppress(UserError):  # the same failure as rank 0's, which records it
                fit_guarded(recipe, plugins=plugins, score_test=False)
            trained += 1
    return trained


def _broadcast(message: Any) -> Any:
    """Rank 0's ``message`` on every rank (the group that ``hold_group`` keeps)."""
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]
