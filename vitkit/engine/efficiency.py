"""Training choices that trade time and memory: gradient checkpointing, ``train.compile = "auto"``
(compile only when it pays, measured) and bf16 on CPUs that compute it natively (``train.precision =
"auto"``, decided from the model's work per image)."""

from __future__ import annotations

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


class CompileWhenPays:
    """``train.compile = "auto"``: time ``measure`` eager training steps (after one warm-up step),
    compile, time the first compiled step (the compile) and ``measure`` more, then keep the compiled
    model only when the time it saves over the remaining steps exceeds the compile time.

    The trainer calls ``before_step()`` and ``after_step()`` around each training step and steps
    through ``forward``, the model to call now. ``decision`` holds the figures once decided.
    """

    def __init__(self, eager: nn.Module, remaining_steps: int, device: torch.device, measure: int = 3) -> None:
        self.eager, self.forward, self.device, self.measure = eager, eager, device, measure
        self.remaining = remaining_steps
        self.compiled: nn.Module | None = None
        self.eager_s: list[float] = []
        self.compiled_s: list[float] = []
        self.compile_step_s: float | None = None
        self.started = 0.0
        self.decision: dict[str, Any] | None = None
        if remaining_steps < 2 * measure + 2:
            self.decision = {"choice": "eager", "why": f"{remaining_steps} steps: too few to measure"}

    def line(self) -> str:
        """What was decided and why, for the console."""
        d = self.decision or {}
        if "why" in d:
            return f"train.compile auto: {d['choice']} ({d['why']})"
        return (
            f"train.compile auto: {d['choice']}: eager {d['eager_ms']:.1f} ms/step, compiled {d['compiled_ms']:.1f} "
            f"ms/step after {d['compile_s']:.1f} s of compiling; saves {d['saving_s']:.1f} s over the "
            f"{d['remaining_steps']} remaining steps, {'more' if d['choice'] == 'compiled' else 'less'} than it cost"
        )

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
                figures = _hook_figures()
                self.compiled = torch.compile(self.eager, backend="eager") if figures else torch.compile(self.eager)
                self.forward = self.compiled
            return False
        if self.compile_step_s is None:
            self.compile_step_s = took
            return False
        self.compiled_s.append(took)
        if len(self.compiled_s) < self.measure:
            return False
        eager = statistics.median(self.eager_s[1:])
        compiled = statistics.median(self.compiled_s)
        compile_s = max(self.compile_step_s - compiled, 0.0)
        figures = _hook_figures()
        if figures:
            eager, compiled, compile_s = figures
        saving = (eager - compiled) * self.remaining
        choice = "compiled" if saving > compile_s else "eager"
        self.decision = {
            "choice": choice,
            "eager_ms": eager * 1e3,
            "compiled_ms": compiled * 1e3,
            "compile_s": compile_s,
            "saving_s": saving,
            "remaining_steps": self.remaining,
        }
        self.forward = self.compiled if choice == "compiled" else self.eager
        return True
