"""``vitkit compare --jobs N``: train several runs at once, each as its own ``vitkit run`` process.

On CPU, N processes share the machine's cores: each gets ``cores // N`` torch threads
(``OMP_NUM_THREADS``). With CUDA GPUs visible, each process sees one GPU
(``CUDA_VISIBLE_DEVICES``) and at most one run trains per GPU. A run's console output goes to
``<out>/<run name>.log``; the comparison reads the finished runs' files exactly as after a
sequential comparison, so the report is the same.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vitkit.engine.console import console
from vitkit.engine.threads import threads_per_job
from vitkit.errors import UserError

if TYPE_CHECKING:
    from vitkit.commands.compare.plan import Repeat, Variant


def gpu_slots() -> list[str]:
    """The visible CUDA devices as ``CUDA_VISIBLE_DEVICES`` values (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids[: torch.cuda.device_count()] or [str(i) for i in range(torch.cuda.device_count())]


def run_command(
    variant: Variant, repeat: Repeat, overrides: list[str], out_dir: Path, plugins: tuple[str, ...], entry_points: bool
) -> list[str]:
    """The ``vitkit run`` command line of one repeat (the same recipe and keys as in-process training)."""
    from vitkit.commands.compare.plan import run_overrides

    command = [sys.executable, "-m", "vitkit", "run", str(variant.source)]
    for override in run_overrides(variant, repeat, overrides, out_dir):
        command += ["--set", override]
    for plugin in plugins:
        command += ["--plugin", plugin]
    return command + ([] if entry_points else ["--no-plugins"])


def finished_run(out_dir: Path, name: str, before: set[Path]) -> Path | None:
    """The run directory a ``vitkit run`` process made under ``out_dir/name/`` (new, with summary.json)."""
    made = [p for p in (out_dir / name).glob("*/summary.json") if p.parent not in before]
    return max(made, key=lambda p: p.stat().st_mtime).parent if made else None


def run_parallel(
    todo: list[tuple[Variant, Repeat]],
    overrides: list[str],
    out_dir: Path,
    plugins: tuple[str, ...],
    entry_points: bool,
    jobs: int,
) -> None:
    """Train ``todo`` with up to ``jobs`` processes at a time; sets each repeat's ``run_dir``."""
    from vitkit.commands.compare.plan import repeat_name

    gpus = gpu_slots()
    slots = gpus[:jobs] if gpus else [None] * jobs
    threads = threads_per_job(len(slots))
    where = f"{len(slots)} GPU(s), one run each" if gpus else f"CPU, {threads} thread(s) per run"
    console.print(f"compare: {len(todo)} runs, {len(slots)} at a time ({where}); logs in {out_dir}/<run>.log")
    queue = list(todo)
    running: dict[subprocess.Popen, tuple[Variant, Repeat, str | None, Path, set[Path], object]] = {}
    failures: list[str] = []
    done = 0
    while queue or running:
        free = [s for s in slots if s not in [job[2] for job in running.values()]] if gpus else []
        while queue and len(running) < len(slots) and not failures:
            variant, repeat = queue.pop(0)
            slot = free.pop(0) if gpus else None
            name = repeat_name(variant, repeat)
            env = dict(os.environ)
            if slot is not None:
                env["CUDA_VISIBLE_DEVICES"] = slot
            else:
                env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
            log_path = out_dir / f"{name}.log"
            before = {p.parent for p in (out_dir / name).glob("*/summary.json")}
            log = open(log_path, "w")  # noqa: SIM115 (closed when the process ends)
            command = run_command(variant, repeat, overrides, out_dir, plugins, entry_points)
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[proc] = (variant, repeat, slot, log_path, before, log)
        if not running:
            break
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            variant, repeat, _, log_path, before, log = running.pop(proc)
            log.close()
            name = repeat_name(variant, repeat)
            label = f"{variant.label!r}" + (f" ({repeat.tag})" if repeat.tag else "")
            run_dir = finished_run(out_dir, name, before)
            if proc.returncode != 0 or run_dir is None:
                lines = log_path.read_text(errors="replace").strip().splitlines()
                last = lines[-1] if lines else f"exit code {proc.returncode}"
                failures.append(f"compare variant {label}: {last.removeprefix('vitkit: error: ')} (log: {log_path})")
                continue
            repeat.run_dir = run_dir
            done += 1
            console.print(f"[{done}/{len(todo)}] {label} finished: {run_dir}")
    if failures:
        raise UserError("; ".join(failures))
