"""CPU threads: how many this process uses (``train.threads``, ``--threads``), and a hint when the machine
is already busy. Two processes that each take every core slow each other many times over (OpenMP threads
spin while they wait for a core), so vitkit splits cores itself where it starts several workers
(``threads_per_job``): ``compare --jobs N`` and ``tune --jobs N`` give each process ``cores // N`` threads
unless ``--threads`` says otherwise; torch gives each DataLoader worker one."""

from __future__ import annotations

import os

LOAD_HOOK = "VITKIT_TEST_LOADAVG"  # test hook: a 1-minute load average to use instead of the machine's


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(jobs: int, asked: int = 0) -> int:
    """Torch threads for each of ``jobs`` processes sharing this machine: ``asked`` (``--threads``,
    ``train.threads``) when given, else the cores (at most torch's own count) split between them. The one
    split of ``compare --jobs`` and ``tune --jobs``."""
    if asked > 0:
        return asked
    import torch

    return max(1, min(cores(), torch.get_num_threads()) // jobs)


def load_average() -> float | None:
    """The 1-minute load average (``None`` where the OS has none); ``VITKIT_TEST_LOADAVG`` stands in for it."""
    given = os.environ.get(LOAD_HOOK)
    if given:
        return float(given)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads for torch's ops (0: leave torch's default); returns the number in use."""
    import torch

    if threads > 0 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def busy_note(threads: int) -> str | None:
    """One line when the machine is busy (load above its core count) and this process takes every core;
    ``None`` otherwise."""
    load, n = load_average(), cores()
    if load is None or load <= n or threads < n:
        return None
    return (
        f"note: this machine is busy (load {load:.1f} on {n} cores) and this run uses all {threads} threads; "
        f"processes that each take every core slow each other many times over: limit threads with --threads N "
        f"(train.threads), e.g. --threads {max(1, n // 2)}"
    )
