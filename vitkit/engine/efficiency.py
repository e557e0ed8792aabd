"""Training choices that trade time and memory: gradient checkpointing, ``train.compile = "auto"``
(compile only when it pays, measured) and bf16 on CPUs that compute it natively (``train.precision =
"auto"``, decided from the model's work per image)."""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import torch
from torch import nn

from vitkit.errors import UserError

#: Test hook: ``"EAGER_MS,COMPILED_MS,COMPILE_S"`` stand in for the measured step times and compile time,
#: and ``torch.compile`` uses its ``eager`` backend (tracing, no code generation), so both decisions test fast.
COMPILE_FIGURES_HOOK = "VITKIT_TEST_COMPILE_FIGURES"

#: Forward GFLOPs per image from which bf16 autocast pays on a CPU with native bf16 (AVX512-BF16, AMX):
#: on a 2-core AVX512-BF16 Xeon a ViT-Ti/16 training step at 224 px (2.5 GFLOPs) took 0.47x the fp32 time,
#: the digits ViT's (0.0045 GFLOPs) 0.98x (docs/benchmarks.md). ``vitkit bench MODEL --precision both`` checks one.
CPU_BF16_MIN_GFLOPS = 1.0


def enable_grad_checkpointing(model: nn.Module, where: str) -> None:
    """``train.grad_checkpointing``: the model's ``set_grad_checkpointing(True)`` (vitkit's and timm's models)."""
    setter = getattr(model, "set_grad_checkpointing", None)
    if setter is None:
        raise UserError(f"{where}: train.grad_checkpointing: {type(model).__name__} has no set_grad_checkpointing")
    setter(True)


def cpu_auto_precision(model: nn.Module, in_chans: int, img_size: int) -> tuple[str, str]:
    """``train.precision = "auto"`` on CPU: ``(precision, the line that says why)``. bf16 where the CPU
    computes it natively and the model does enough work per image that the casts do not dominate."""
    from vitkit.engine.device import cpu_native_bf16
    from vitkit.engine.flops import count_flops

    if not cpu_native_bf16():
        return "fp32", "precision auto: fp32 (this CPU has no native bf16)"
    gflops = count_flops(model, in_chans, img_size) / 1e9
    choice = "bf16" if gflops >= CPU_BF16_MIN_GFLOPS else "fp32"
    relation = ">=" if choice == "bf16" else "<"
    return choice, (
        f"precision auto: {choice} ({gflops:.3g} GFLOPs/img forward {relation} {CPU_BF16_MIN_GFLOPS:g}, "
        "from where bf16 pays on this CPU's native bf16)"
    )


def resolve_precision(
    name: str, device: torch.device, model: nn.Module, in_chans: int, img_size: int
) -> tuple[str, str | None]:
    """The precision ``train.precision = name`` trains ``model`` in on ``device``: ``(precision, why)``,
    ``why`` the line that explains an ``auto`` choice (``None`` for a named one). Every command that runs a
    recipe's model (run, bench, compare, tune, eval, lr-find) resolves it here, so they agree."""
    from vitkit.engine.device import select_precision

    precision = select_precision(name, device)  # explicit names checked; auto on GPUs
    if name != "auto":
        return precision, None
    if device.type == "cpu":  # bf16 where the model's work per image pays
        return cpu_auto_precision(model, in_chans, img_size)
    if precision == "bf16":
        return precision, f"precision auto: bf16 (this {device.type} device computes bf16 natively)"
    if precision == "fp16":
        return precision, "precision auto: fp16 with a GradScaler (this GPU has no native bf16)"
    return precision, f"precision auto: {precision} (no mixed precision on {device.type})"


def _hook_figures() -> tuple[float, float, float] | None:
    spec = os.environ.get(COMPILE_FIGURES_HOOK)
    if not spec:
        return None
    eager_ms, compiled_ms, compile_s = (float(part) for part in spec.split(","))
    return eager_ms / 1e3, compiled_ms / 1e3, compile_s


#: Steps ``train.compile = "auto"`` times each way; the trial takes ``compile_trial_steps`` steps in all.
COMPILE_MEASURE = 3


def compile_trial_steps(measure: int = COMPILE_MEASURE) -> int:
    """Steps the ``train.compile = "auto"`` trial takes: a warm-up and ``measure`` eager steps, the compiling
    step and ``measure`` compiled ones. A run with fewer steps stays eager without measuring."""
    return 2 * measure + 2


def too_few_to_measure(steps: int, measure: int = COMPILE_MEASURE) -> dict[str, Any] | None:
    """The ``train.compile = "auto"`` decision for a run of ``steps`` steps too short for the trial, else ``None``."""
    if steps < compile_trial_steps(measure):
        return {"choice": "eager", "why": f"{steps} steps: too few to measure", "remaining_steps": steps}
    return None


def compile_for_trial(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` as the auto trial compiles it (the test hook: the ``eager`` backend)."""
    return torch.compile(model, backend="eager") if _hook_figures() else torch.compile(model)


def compile_choice(
    eager_s: float, compiled_s: float, compile_s: float, remaining_steps: int | None
) -> tuple[str | None, str]:
    """The ``train.compile = "auto"`` rule: ``("compiled" | "eager", why)``; compiled when the time it saves
    over ``remaining_steps`` exceeds ``compile_s``. ``remaining_steps`` ``None`` (not known, as in ``vitkit
    bench`` without ``--run-steps``): no choice, ``why`` says from how many remaining steps it pays."""
    figures = f"eager {eager_s * 1e3:.1f} ms/step, compiled {compiled_s * 1e3:.1f} ms/step"
    figures += f" after {compile_s:.1f} s of compiling"
    if remaining_steps is None:
        if compiled_s >= eager_s:
            return None, f"{figures}; never pays (compiled is not faster)"
        pays_from = math.floor(compile_s / (eager_s - compiled_s)) + 1
        return None, f"{figures}; pays from {pays_from} remaining steps"
    saving = (eager_s - compiled_s) * remaining_steps
    choice = "compiled" if saving > compile_s else "eager"
    return choice, (
        f"{figures}; saves {saving:.1f} s over the {remaining_steps} remaining steps, "
        f"{'more' if choice == 'compiled' else 'less'} than it cost"
    )


def compile_decision(
    eager_s: float, compiled_s: float, compile_s: float, remaining_steps: int | None
) -> dict[str, Any]:
    """``train.compile = "auto"`` from measured figures (the test hook's where set): ``choice``, ``why``
    (``compile_choice``), ``eager_ms``, ``compiled_ms``, ``compile_s``, ``saving_s``, ``remaining_steps``.
    The run (``CompileWhenPays``) and ``vitkit bench`` decide here, so they agree on the same figures."""
    figures = _hook_figures()
    if figures:
        eager_s, compiled_s, compile_s = figures
    choice, why = compile_choice(eager_s, compiled_s, compile_s, remaining_steps)
    return {
        "choice": choice,
        "why": why,
        "eager_ms": eager_s * 1e3,
        "compiled_ms": compiled_s * 1e3,
        "compile_s": compile_s,
        "saving_s": (eager_s - compiled_s) * remaining_steps if remaining_steps is not None else None,
        "remaining_steps": remaining_steps,
    }


class CompileWhenPays:
    """``train.compile = "auto"``: time ``measure`` eager training steps (after one warm-up step),
    compile, time the first compiled step (the compile) and ``measure`` more, then keep the compiled
    model only when the time it saves over the remaining steps exceeds the compile time
    (``compile_decision``).

    The trainer calls ``before_step()`` and ``after_step()`` around each training step and steps
    through ``forward``, the model to call now. ``decision`` holds the figures once decided.
    """

    def __init__(
        self, eager: nn.Module, remaining_steps: int, device: torch.device, measure: int = COMPILE_MEASURE
    ) -> None:
        self.eager, self.forward, self.device, self.measure = eager, eager, device, measure
        self.remaining = remaining_steps
        self.compiled: nn.Module | None = None
        self.eager_s: list[float] = []
        self.compiled_s: list[float] = []
        self.compile_step_s: float | None = None
        self.started = 0.0
        self.decision: dict[str, Any] | None = too_few_to_measure(remaining_steps, measure)

    def line(self) -> str:
        """What was decided and why, for the console."""
        d = self.decision or {}
        if "eager_ms" not in d:
            return f"train.compile auto: {d['choice']} ({d['why']})"
        return f"train.compile auto: {d['choice']}: {d['why']}"

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def before_step(self) -> None:
        if self.decision is None:
            self.started = self._now()

    def after_step(self) -> bool:
        """Record this step; ``True`` when the decision was made now (``line()`` says it)."""
        self.remaining -= 1
        if self.decision is not None:
            return False
        took = self._now() - self.started
        if self.compiled is None:
            self.eager_s.append(took)
            if len(self.eager_s) > self.measure:  # the first one warms up
                self.compiled = self.forward = compile_for_trial(self.eager)
            return False
        if self.compile_step_s is None:
            self.compile_step_s = took
            return False
        self.compiled_s.append(took)
        if len(self.compiled_s) < self.measure:
            return False
        eager = statistics.median(self.eager_s[1:])
        compiled = statistics.median(self.compiled_s)
        self.decision = compile_decision(eager, compiled, max(self.compile_step_s - compiled, 0.0), self.remaining)
        self.forward = self.compiled if self.decision["choice"] == "compiled" else self.eager
        return True
