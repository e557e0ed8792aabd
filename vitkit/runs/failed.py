"""``failed.json``: the marker a run that stopped on an error leaves in its directory (``vitkit runs``
shows it; ``--resume`` removes it). No torch import."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path

from vitkit.errors import UserError

FAILED = "failed.json"


def record_failure(run_dir: Path, err: BaseException, saved_epoch: int | None) -> None:
    """Write ``failed.json`` into ``run_dir``: the error, when, and the epoch ``last.pt`` keeps."""
    message = " ".join(str(err).split())
    if not isinstance(err, UserError):
        message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    record = {"error": message, "time": datetime.now().isoformat(timespec="seconds"), "saved_epoch": saved_epoch}
    with contextlib.suppress(OSError):  # a full or read-only disk must not hide the original error
        (Path(run_dir) / FAILED).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def clear_failure(run_dir: Path) -> None:
    """Forget an earlier failure of a run that is being resumed."""
    (Path(run_dir) / FAILED).unlink(missing_ok=True)
