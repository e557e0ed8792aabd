"""``python -m vitkit.commands.bench.memory JOB``: the peak resident memory one benchmark step adds to this
(fresh) process, printed as JSON; ``vitkit.commands.bench.measure.cpu_step_peak_memory_mb`` runs it.

The step runs once to warm up (kernels for its shapes, the optimizer's state), then again while a
thread samples the resident memory every millisecond (Linux ``/proc``; glibc returns big freed
blocks at once, see the caller). Elsewhere: the process's peak so far, from before the warm-up.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
from collections.abc import Callable

import torch

from vitkit.commands.bench.measure import infer_step, train_step


def resident_mb() -> float | None:
    """This process's resident memory now (Linux ``/proc``), else ``None``."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def peak_so_far_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def sampled_peak_mb(step: Callable[[], None]) -> float:
    """The most resident memory seen while ``step`` runs."""
    peak = resident_mb() or 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_mb() or 0.0)
            done.wait(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        step()
    finally:
        done.set()
        sampler.join()
    return peak


def main(path: str) -> None:
    job = torch.load(path, weights_only=False)
    torch.set_num_threads(job["threads"])
    model, size, chans, precision, batch = (
        job["model"],
        job["img_size"],
        job["in_chans"],
        job["precision"],
        job["batch_size"],
    )
    if job["mode"] == "train":
        step = train_step(model, batch, size, chans, job["num_classes"], precision)
    else:
        step = infer_step(model, batch, size, chans, precision)
    if resident_mb() is None:  # no /proc: the peak of the whole process, less what it held before the steps
        before = peak_so_far_mb()
        step()
        peak_mb = peak_so_far_mb() - before
    else:
        step()
        before = resident_mb() or 0.0
        peak_mb = sampled_peak_mb(step) - before
    print(json.dumps({"peak_mb": peak_mb, "before_mb": before}))


if __name__ == "__main__":
    main(sys.argv[1])
