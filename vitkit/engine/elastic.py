"""A lost worker does not lose the run: continuing after ``torchrun --max-restarts=N`` restarts the workers.

When a worker dies, torchrun stops the others and starts the whole group again with the same
command line and ``TORCHELASTIC_RESTART_COUNT`` one higher. A fresh ``vitkit run RECIPE`` would
start a new run directory (its name is the start time), so rank 0 writes
``checkpoints/elastic.json`` into the run directory once its epoch-0 checkpoint exists: torchrun's
run id (``TORCHELASTIC_RUN_ID``: ``--rdzv_id``, or a random id under ``--standalone``, the same
across restarts) and the recipe. A restarted worker (restart count > 0) looks for the unfinished run
directory under ``<output.dir>/<name>/`` whose marker has its run id and recipe, and continues from
its ``last.pt`` like ``--resume``. The marker is removed when the run finishes. Several machines:
the restarted ranks read ``last.pt`` and the marker, so ``output.dir`` must be on a shared disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vitkit.recipe import Recipe
from vitkit.runs.checkpoint import atomic_write_text

MARKER = "elastic.json"


def run_id() -> str | None:
    """torchrun's rendezvous run id (``None`` when not launched by torchrun)."""
    return os.environ.get("TORCHELASTIC_RUN_ID")


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def _recipe_key(recipe: Recipe) -> str:
    return json.dumps(recipe.to_dict(), sort_keys=True, default=str)


def mark(run_dir: Path, recipe: Recipe) -> None:
    """Record that this torchrun run owns ``run_dir`` (rank 0 of a fresh run under torchrun)."""
    rid = run_id()
    if rid is None:
        return
    marker = {"run_id": rid, "recipe": _recipe_key(recipe)}
    atomic_write_text(Path(run_dir) / "checkpoints" / MARKER, json.dumps(marker) + "\n")


def unmark(run_dir: Path) -> None:
    """The run finished: nothing to continue."""
    (Path(run_dir) / "checkpoints" / MARKER).unlink(missing_ok=True)


def restarted_run(recipe: Recipe) -> Path | None:
    """After torchrun restarted the workers: the run directory this torchrun run started with
    ``recipe`` (the newest, should several match), or ``None`` (first attempt, or nothing saved yet)."""
    rid = run_id()
    if rid is None or restart_count() == 0:
        return None
    key = _recipe_key(recipe)
    found = []
    for marker in (Path(recipe.output.dir) / recipe.name).glob(f"*/checkpoints/{MARKER}"):
        try:
            data: dict[str, Any] = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if data.get("run_id") == rid and data.get("recipe") == key:
            found.append(marker)
    if not found:
        return None
    return max(found, key=lambda m: m.stat().st_mtime).parent.parent
