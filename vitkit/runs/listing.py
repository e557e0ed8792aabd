"""Every run directory under a folder, with its status and results (``vitkit runs``; no torch needed).

A run directory's status comes from what it holds:

- ``summary.json``: finished (it is written last), or pruned where it says ``"status": "pruned"`` (a
  ``vitkit tune`` trial its pruner stopped early);
- ``failed.json``: failed (written when the run stopped on an error; ``--resume`` removes it);
- ``checkpoints/last.pt``: interrupted and resumable (killed, Ctrl-C, power cut; or still training);
- none of these: ``incomplete`` (stopped before its first checkpoint).
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomllib

from vitkit.errors import UserError
from vitkit.runs.failed import FAILED
from vitkit.runs.layout import is_run_dir

COLUMNS = ("name", "time", "model", "dataset", "epochs", "best_val_acc", "test_acc", "wall_time_s", "status")
DESCENDING = {"epochs", "best_val_acc", "test_acc", "wall_time_s"}  # --sort puts the largest first


@dataclass
class RunInfo:
    """One row of ``vitkit runs``."""

    name: str
    time: str  # "YYYY-mm-dd HH:MM:SS", from the run directory's name (else its mtime)
    model: str
    dataset: str
    epochs_done: int
    epochs_planned: int | None
    best_val_acc: float | None
    test_acc: float | None
    wall_time_s: float | None
    status: str  # finished | pruned | interrupted | failed | incomplete
    run_dir: str
    folder: str = ""  # run_dir relative to the folder listed (run_dir itself when that is the run)
    resume: str | None = None  # the command that continues it
    error: str | None = None

    def key(self, column: str) -> Any:
        return self.epochs_done if column == "epochs" else getattr(self, column)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metrics(path: Path) -> list[dict[str, str]]:
    try:
        return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, csv.Error):
        return []


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _started(run_dir: Path) -> str:
    try:
        stamp = datetime.strptime(run_dir.name.split("-")[0] + run_dir.name.split("-")[1], "%Y%m%d%H%M%S")
    except (ValueError, IndexError):
        stamp = datetime.fromtimestamp(run_dir.stat().st_mtime)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def read_run(run_dir: Path) -> RunInfo:
    """What ``run_dir`` holds: recipe, metrics, summary and status."""
    try:
        recipe = tomllib.loads((run_dir / "recipe.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recipe = {}
    summary = _read_json(run_dir / "summary.json")
    rows = _metrics(run_dir / "metrics.csv")
    vals = [v for row in rows for k in ("val_acc", "ema_val_acc") if (v := _number(row.get(k))) is not None]
    train = recipe.get("train", {}) if isinstance(recipe.get("train"), dict) else {}
    info = RunInfo(
        name=str(summary.get("name") or recipe.get("name") or run_dir.parent.name),
        time=_started(run_dir),
        model=str(summary.get("model") or (recipe.get("model") or {}).get("name", "?")),
        dataset=str((recipe.get("data") or {}).get("dataset", "?")),
        epochs_done=int(summary.get("epochs_run") or len(rows)),
        epochs_planned=train.get("epochs") if isinstance(train.get("epochs"), int) else None,
        best_val_acc=_number(summary.get("best_val_acc")) if summary else (max(vals) if vals else None),
        test_acc=_number(summary.get("test_acc")),
        wall_time_s=_number(summary.get("wall_time_s"))
        if summary
        else (_number(rows[-1].get("time")) if rows else None),
        status="incomplete",
        run_dir=str(run_dir),
    )
    if summary:
        info.status = "pruned" if summary.get("status") == "pruned" else "finished"
    elif (run_dir / FAILED).is_file():
        info.status, info.error = "failed", str(_read_json(run_dir / FAILED).get("error", "unknown error"))
    elif (run_dir / "checkpoints" / "last.pt").is_file():
        info.status, info.resume = "interrupted", f"vitkit run --resume {run_dir}"
    return info


def find_runs(root: Path) -> list[Path]:
    """Every run directory (one holding ``recipe.toml``) at or under ``root``."""
    if not root.is_dir():
        raise UserError(f"vitkit runs: {root}: no such directory (runs are under <output.dir>, default runs/)")
    found = []
    for here, dirs, _files in os.walk(root):
        if is_run_dir(Path(here)):
            found.append(Path(here))
            dirs.clear()  # nothing below a run directory is a run
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    return found


def list_runs(
    root: Path, name: str = "*", model: str = "*", sort: str = "time", reverse: bool = False
) -> list[RunInfo]:
    """The runs under ``root`` whose name and model match the fnmatch patterns, sorted by ``sort``."""
    if sort not in COLUMNS:
        raise UserError(f"vitkit runs: --sort {sort!r}: expected one of {', '.join(COLUMNS)}")
    runs = []
    for path in find_runs(root):
        info = read_run(path)
        info.folder = path.relative_to(root).as_posix() if path != root else str(path)
        runs.append(info)
    runs = [r for r in runs if fnmatch.fnmatchcase(r.name, name) and fnmatch.fnmatchcase(r.model, model)]
    present = [r for r in runs if r.key(sort) is not None]
    present.sort(key=lambda r: (r.key(sort), r.time), reverse=(sort in DESCENDING) != reverse)
    return present + [r for r in runs if r.key(sort) is None]  # runs without the value last
