"""``vitkit runs [DIR]``: a table (or JSON) of every run under a folder; ``vitkit.runs.listing`` reads them."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vitkit.commands import Command
from vitkit.runs.listing import COLUMNS, RunInfo, list_runs


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


def add_arguments(runs: argparse.ArgumentParser) -> None:
    runs.add_argument(
        "dir", nargs="?", default="runs", metavar="DIR", help="folder holding run directories (default runs)"
    )
    runs.add_argument("--sort", default="time", choices=COLUMNS, metavar="COL", help=f"sort by: {', '.join(COLUMNS)}")
    runs.add_argument("--reverse", action="store_true", help="reverse the order (accuracies sort best first)")
    runs.add_argument("--name", default="*", metavar="PATTERN", help="only runs whose name matches (fnmatch)")
    runs.add_argument("--model", default="*", metavar="PATTERN", help="only runs whose model matches (fnmatch)")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")


def main(args: argparse.Namespace) -> int:
    return runs_command(args.dir, args.name, args.model, args.sort, args.reverse, args.json)


COMMANDS = (
    Command(
        "runs",
        "list every run under runs/ (or DIR): status, accuracy, resume command",
        add_arguments,
        main,
        plugin_flags=False,
    ),
)
