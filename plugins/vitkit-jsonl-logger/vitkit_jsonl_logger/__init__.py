"""A hooks-only vitkit plugin: one JSON line per epoch, for your own tracking tools.

Opt-in: it writes only when the environment variable ``VITKIT_JSONL`` is set, to

- a file path: lines are appended to that file (created with its folders),
- ``-``: standard output,
- ``run``: ``metrics.jsonl`` inside each run directory.

Each line: ``{"run": name, "run_dir": ..., "epoch": n, "train_loss": ..., "val_loss": ...,
"val_acc": ..., "lr": ..., ...}`` (every metric vitkit passes to ``vitkit_on_epoch_end``).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import vitkit

ENV = "VITKIT_JSONL"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def _write(line: str, target: str, run_dir: Path) -> None:
    if target == "-":
        print(line, file=sys.stdout, flush=True)
        return
    path = run_dir / "metrics.jsonl" if target == "run" else Path(target).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@vitkit.hookimpl
def vitkit_on_epoch_end(run: Any, epoch: int, metrics: dict[str, Any]) -> None:
    """Append this epoch's metrics as one JSON line, when ``VITKIT_JSONL`` is set."""
    target = os.environ.get(ENV, "").strip()
    if not target:
        return
    record = {"run": run.recipe.name, "run_dir": str(run.run_dir), "epoch": epoch}
    record.update({key: _json_value(value) for key, value in metrics.items() if key != "epoch"})
    _write(json.dumps(record), target, Path(run.run_dir))
