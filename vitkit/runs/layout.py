"""What a vitkit output looks like on disk, decided once: a run directory, and an ``output.dir`` marked
as vitkit's. The imagefolder reader skips both, so a run written inside the data root is never read
as a class of images. No torch import."""

from __future__ import annotations

import contextlib
import csv
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vitkit.errors import UserError

if TYPE_CHECKING:
    from vitkit.recipe import Recipe

OUTPUT_MARKER = ".vitkit-output"  # written into every output.dir vitkit creates runs in


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run directory (it holds ``recipe.toml`` and ``checkpoints/``)."""
    return (path / "recipe.toml").is_file() and (path / "checkpoints").is_dir()


def mark_output_dir(path: Path) -> None:
    """Mark ``path`` (an ``output.dir``) as vitkit's, so it is never read as data."""
    marker = Path(path) / OUTPUT_MARKER
    if not marker.exists():
        with contextlib.suppress(OSError):  # a read-only parent: the run fails later, with its own message
            marker.write_text("vitkit writes runs here; vitkit never reads this folder as images\n")


def is_vitkit_output(path: Path, depth: int = 2) -> bool:
    """Whether ``path`` is vitkit output: a marked ``output.dir``, a run directory, or a folder holding a
    run directory up to ``depth`` levels down (``runs/<name>/<time>/`` written before the marker existed)."""
    path = Path(path)
    if (path / OUTPUT_MARKER).is_file() or is_run_dir(path):
        return True
    if depth == 0:
        return False
    try:
        with os.scandir(path) as entries:
            subdirs = [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return any(is_run_dir(d) or (depth > 1 and is_vitkit_output(d, depth - 1)) for d in subdirs)


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """A run's ``metrics.csv`` rows as numbers."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def new_run_dir(recipe: Recipe, prefix: str = "") -> Path:
    """``<output.dir>/<name>/<prefix><YYYYmmdd-HHMMSS>[-N]/``, created; unwritable locations are user errors."""
    parent = Path(recipe.output.dir) / recipe.name
    stamp = prefix + datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        mark_output_dir(Path(recipe.output.dir))  # never read as images, even inside the data root
        for n in range(1000):
            path = parent / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise UserError(
            f"{recipe.where()}: output.dir: cannot create a run directory under {parent}: {err.strerror}"
        ) from None
    raise UserError(f"output.dir: too many runs started this second under {parent}")
