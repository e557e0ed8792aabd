"""``vitkit runs``: every run directory under a folder, with its status and results (no torch needed).

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
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomllib

from vitkit.engine.failed import FAILED
from vitkit.errors import UserError
from vitkit.run_dirs import is_run_dir

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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.1f} s"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


STATUS_STYLE = {"finished": "green", "pruned": "yellow", "interrupted": "yellow", "failed": "red", "incomplete": "dim"}
TABLE = {"run": "left", "model": "left", "dataset": "left", "epochs": "right", "best val": "right",
         "test": "right", "wall": "right", "status": "left"}  # header: justify, in display order  # fmt: skip
DROP_FIRST = ("dataset", "wall", "epochs", "model", "best val")  # left out in this order while the table is too wide


def _cells(r: RunInfo) -> dict[str, str]:
    planned = "?" if r.epochs_planned is None else r.epochs_planned
    return {
        "run": r.folder or r.run_dir, "model": r.model, "dataset": r.dataset, "epochs": f"{r.epochs_done}/{planned}",
        "best val": _acc(r.best_val_acc), "test": _acc(r.test_acc), "wall": _duration(r.wall_time_s),
        "status": r.status,
    }  # fmt: skip


def _table(rows: list[dict[str, str]], headers: list[str], terminal: bool, run_width: int) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD if terminal else None, show_edge=False, pad_edge=False)
    for header in headers:  # only the run folder wraps (never truncated: it tells runs apart)
        width = max(len(header), *(len(row[header]) for row in rows))
        table.add_column(
            header,
            justify=TABLE[header],
            no_wrap=header != "run",
            overflow="fold",
            min_width=run_width if header == "run" else width,
        )
    for row in rows:
        table.add_row(
            *(Text(v, style=STATUS_STYLE[v] if h == "status" else "") for h, v in row.items() if h in headers)
        )
    return table


def print_runs(runs: Iterable[RunInfo], root: Path) -> None:
    """A table of ``runs`` that fits the console's width (``COLUMNS``; 80 when piped), plain text when
    not on a terminal; then the resume command of each interrupted run and the error of each failed one."""
    from rich.console import Console
    from rich.markup import escape
    from rich.measure import Measurement

    runs = list(runs)
    console = Console(highlight=False)
    if not runs:
        console.print(f"no runs under {escape(str(root))} (a run directory holds recipe.toml and checkpoints/)")
        return
    rows, headers = [_cells(r) for r in runs], list(TABLE)
    run_width = min(max(len(row["run"]) for row in rows), max(16, console.width // 2))
    unlimited = console.options.update_width(10_000)
    for column in DROP_FIRST:
        table = _table(rows, headers, console.is_terminal, run_width)
        if Measurement.get(console, unlimited, table).maximum <= console.width:
            break
        headers.remove(column)
    console.print(f"{len(runs)} run{'s' * (len(runs) != 1)} under {escape(str(root))}")
    table = _table(rows, headers, console.is_terminal, run_width)
    if console.is_terminal:
        console.print(table)
    else:  # plain text: no trailing blanks from the padded last column
        with console.capture() as captured:
            console.print(table)
        console.out("\n".join(line.rstrip() for line in captured.get().splitlines()))
    for r in runs:
        if r.resume:
            console.print(f"[yellow]resume[/] {escape(r.resume)}", soft_wrap=True)  # one line: copied whole
        elif r.error:
            console.print(f"[red]failed[/] {escape(r.folder or r.run_dir)}: {escape(r.error)}")


def runs_command(root: str, name: str, model: str, sort: str, reverse: bool, as_json: bool) -> int:
    """``vitkit runs``: print the table (or ``--json``: a list of objects, one per run, every field)."""
    path = Path(root)
    runs = list_runs(path, name, model, sort, reverse)
    if as_json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
    else:
        print_runs(runs, path)
    return 0
