"""Throughput measurement: img/s, step time, FLOPs and memory of training steps and inference.

Several candidates (vitkit's model, timm's twin, the model with gradient checkpointing, patch
dropout or another precision) are timed interleaved in one process (A B, B A, A B, ... after a
warm-up) and the median of the repeats is kept, so a machine whose load drifts penalises all
alike. Peak memory: CUDA's allocator peak on GPU; on CPU the peak resident memory that one step
adds to a separate process (``vitkit.commands.bench.memory``). ``vitkit bench`` and ``benchmarks/``
share this code.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.commands.bench.timm_twin import timm_twin
from vitkit.engine.device import DTYPES, autocast
from vitkit.errors import UserError

#: Dense bf16/fp16 tensor-core peak in TFLOP/s, matched in order against ``torch.cuda.get_device_name``.
PEAK_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
)

Step = Callable[[], None]


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The GPU's dense half-precision peak, or ``None`` (CPU, fp32, or a GPU not in the table)."""
    if device.type != "cuda" or precision not in ("bf16", "fp16"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """One model under measurement, with the step functions built for it."""

    name: str
    model: nn.Module
    precision: str = "fp32"
    counted: bool = True  # the model's forward FLOPs are this candidate's (not with patch dropout)
    params: int = 0
    steps: dict[str, Step] = field(default_factory=dict)
    first_step_s: dict[str, float] = field(default_factory=dict)
    peak_mem_mb: dict[str, float] = field(default_factory=dict)


def train_step(
    model: nn.Module, batch_size: int, img_size: int, in_chans: int, num_classes: int, precision: str
) -> Step:
    """One optimizer update on a fixed random batch: forward, cross-entropy, backward, AdamW step."""
    from vitkit.optim import adamw, param_groups

    module = getattr(model, "_orig_mod", model)
    device = next(module.parameters()).device
    optimizer = adamw(param_groups(module, 0.05), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    images = torch.randn(batch_size, in_chans, img_size, img_size, device=device)
    targets = torch.randint(0, max(num_classes, 1), (batch_size,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.train()
        with autocast(device, precision):
            loss = loss_fn(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def infer_step(model: nn.Module, batch_size: int, img_size: int, in_chans: int, precision: str) -> Step:
    """One no-grad forward pass in eval mode on a fixed random batch."""
    module = getattr(model, "_orig_mod", model)
    device = next(module.parameters()).device
    images = torch.randn(batch_size, in_chans, img_size, img_size, device=device)

    def step() -> None:
        model.eval()
        with torch.no_grad(), autocast(device, precision):
            model(images)

    return step


# ----------------------------------------------------------------------------------- timing


def time_interleaved(
    steps: dict[str, Step], device: torch.device, iters: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per call of each step, ``repeats`` samples each, measured A B / B A alternately."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            fn = steps[name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / iters)
    return samples


def first_step_time(fn: Step, device: torch.device) -> float:
    """Wall time of one call, e.g. the first one (which includes ``torch.compile``)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def step_peak_memory_mb(fn: Step, device: torch.device) -> float | None:
    """CUDA: the most memory allocated during one call (every candidate's weights resident); else ``None``."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def process_peak_rss_mb() -> float | None:
    """This process's peak resident memory (all candidates together), where the OS reports it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def cpu_step_peak_memory_mb(model: nn.Module, mode: str, spec: BenchSpec, precision: str) -> float | None:
    """CPU: the peak resident memory that ``mode``'s step adds to a fresh process holding ``model``
    after one warm-up step (``vitkit.commands.bench.memory``). A model that cannot be pickled (a class
    defined in a script) is an error."""
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as tmp:
        path = Path(tmp) / "step.pt"
        job = {
            "model": model,
            "mode": mode,
            "batch_size": spec.batch_size,
            "img_size": spec.img_size,
            "in_chans": spec.in_chans,
            "num_classes": spec.num_classes,
            "precision": precision,
            "threads": torch.get_num_threads(),
        }
        torch.save(job, path)
        # glibc: every block over 64 KiB mapped on its own and unmapped when freed, so RSS follows the live memory
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        done = subprocess.run(
            [sys.executable, "-m", "vitkit.commands.bench.memory", str(path)], capture_output=True, text=True, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"the CPU memory measurement of {mode} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


# ------------------------------------------------------------------------------------ bench


@dataclass
class BenchSpec:
    """What to measure: one model, input shape, batch, precision (``both``: fp32 and bf16), modes,
    variants beside it (timm's twin, gradient checkpointing, patch dropout), and how long.

    ``compile``: ``True`` compiles every candidate; ``"auto"`` times them eager and adds the
    ``train.compile = "auto"`` decision for a run of ``run_steps`` training steps (``compile_auto_trial``).

    ``auto_why``: ``precision`` is what ``train.precision = "auto"`` resolved to (``resolve_precision``,
    as a run resolves it), with this line saying why; a choice other than fp32 is timed beside fp32."""

    model: nn.Module
    name: str
    img_size: int
    in_chans: int
    num_classes: int
    batch_size: int = 64
    precision: str = "fp32"
    compile: bool | str = False
    modes: tuple[str, ...] = ("train", "infer")
    vs_timm: bool = False
    grad_checkpointing: bool = False
    patch_drop_rate: float = 0.0
    iters: int = 5
    repeats: int = 7
    warmup: int = 2
    auto_why: str | None = None
    run_steps: int | None = None


def _rate(seconds: list[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"img_per_s": batch_size / median, "step_ms": median * 1e3, "spread": (max(seconds) - min(seconds)) / median}


def variant(model: nn.Module, grad_checkpointing: bool = False, patch_drop_rate: float = 0.0) -> nn.Module:
    """A copy of ``model`` with gradient checkpointing on or a patch-dropout rate (``UserError`` if it has none)."""
    twin = copy.deepcopy(model)
    if grad_checkpointing:
        if not hasattr(twin, "set_grad_checkpointing"):
            raise UserError(f"--grad-checkpointing: {type(model).__name__} has no set_grad_checkpointing")
        twin.set_grad_checkpointing(True)
    if patch_drop_rate:
        from vitkit.layers import PatchDropout

        drops = [m for m in twin.modules() if isinstance(m, PatchDropout)]
        if not drops:
            raise UserError(f"--patch-drop: {type(model).__name__} has no patch dropout (vitkit's models have)")
        if not 0.0 < patch_drop_rate < 1.0:
            raise UserError(f"--patch-drop: expected a rate in (0, 1), got {patch_drop_rate}")
        for drop in drops:
            drop.rate = patch_drop_rate
    return twin


def candidates_for(spec: BenchSpec) -> list[Candidate]:
    """The model as given (first: the base of the ratios), then each variant asked for."""
    precisions = ["fp32", "bf16"] if spec.precision == "both" else [spec.precision]
    if spec.auto_why is not None and spec.precision != "fp32":  # what auto buys: its choice, then fp32
        precisions = [spec.precision, "fp32"]
    found = [Candidate("vitkit" + (f" {p}" if len(precisions) > 1 else ""), spec.model, p) for p in precisions]
    if spec.vs_timm:
        found.append(Candidate("timm", timm_twin(spec.model), precisions[0]))
    if spec.grad_checkpointing:
        found.append(Candidate("vitkit ckpt", variant(spec.model, grad_checkpointing=True), precisions[0]))
    if spec.patch_drop_rate:
        twin = variant(spec.model, patch_drop_rate=spec.patch_drop_rate)
        found.append(Candidate(f"vitkit pdrop {spec.patch_drop_rate:g}", twin, precisions[0], counted=False))
    return found


def compile_auto_trial(spec: BenchSpec, device: torch.device, precision: str) -> dict[str, Any]:
    """What ``train.compile = "auto"`` picks for a run of ``spec.run_steps`` training steps: eager and
    compiled training steps of ``spec.model`` timed interleaved, the compile time (the first compiled
    step less a compiled one), decided by ``efficiency.compile_decision`` as the run decides, for the
    steps left after the run's trial. ``run_steps`` ``None``: no choice, from how many steps it pays."""
    from vitkit.engine.efficiency import compile_decision, compile_for_trial, compile_trial_steps, too_few_to_measure

    shape = (spec.batch_size, spec.img_size, spec.in_chans, spec.num_classes, precision)
    if spec.run_steps is not None and (too_few := too_few_to_measure(spec.run_steps)) is not None:
        return {**too_few, "eager_ms": None, "compiled_ms": None, "compile_s": None, "run_steps": spec.run_steps}
    eager = train_step(spec.model, *shape)
    compiled = train_step(compile_for_trial(spec.model), *shape)
    first_step_time(eager, device)  # the run's first step warms up too
    compile_step_s = first_step_time(compiled, device)
    samples = time_interleaved({"eager": eager, "compiled": compiled}, device, spec.iters, spec.repeats, spec.warmup)
    eager_s, compiled_s = (statistics.median(samples[name]) for name in ("eager", "compiled"))
    remaining = spec.run_steps - compile_trial_steps() if spec.run_steps is not None else None
    decision = compile_decision(eager_s, compiled_s, max(compile_step_s - compiled_s, 0.0), remaining)
    speedup = decision["eager_ms"] / decision["compiled_ms"] if decision["compiled_ms"] else None
    return {**decision, "run_steps": spec.run_steps, "speedup_vs_eager": speedup}


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Measure ``spec``: one row per (candidate, mode), plus vitkit/timm ratios when ``vs_timm`` and
    each variant's step time and peak memory against the first candidate (``vs_base``)."""
    from vitkit.engine.flops import count_flops, gmacs

    if spec.precision not in (*DTYPES, "both"):
        raise UserError(f"--precision: expected fp32, bf16, fp16 or both, got {spec.precision!r}")
    device = next(spec.model.parameters()).device
    if spec.precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    candidates = candidates_for(spec)
    flops = count_flops(spec.model, spec.in_chans, spec.img_size)  # the same for timm's twin (same graph)
    params = sum(p.numel() for p in spec.model.parameters())
    for cand in candidates:
        cand.params = sum(p.numel() for p in cand.model.parameters())
        runner = torch.compile(cand.model) if spec.compile is True else cand.model
        for mode in spec.modes:
            if mode == "train":
                fn = train_step(runner, spec.batch_size, spec.img_size, spec.in_chans, spec.num_classes, cand.precision)
            else:
                fn = infer_step(runner, spec.batch_size, spec.img_size, spec.in_chans, cand.precision)
            cand.steps[mode] = fn
            cand.first_step_s[mode] = first_step_time(fn, device)
            mem = step_peak_memory_mb(fn, device)
            if device.type == "cpu" and spec.compile is not True:  # a compiled step's memory would need a compile there
                mem = cpu_step_peak_memory_mb(cand.model, mode, spec, cand.precision)
            if mem is not None:
                cand.peak_mem_mb[mode] = mem

    peak = peak_tflops(device, spec.precision)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    vs_base: dict[str, dict[str, dict[str, float | None]]] = {}
    for mode in spec.modes:
        steps = {cand.name: cand.steps[mode] for cand in candidates}
        samples = time_interleaved(steps, device, spec.iters, spec.repeats, spec.warmup)
        by_name = {}
        for cand in candidates:
            rate = _rate(samples[cand.name], spec.batch_size)
            step_flops = flops * (3 if mode == "train" else 1)  # backward ~ 2x forward
            tflops = step_flops * rate["img_per_s"] / 1e12 if cand.counted else None
            peak_cand = peak_tflops(device, cand.precision)
            rows.append(
                {
                    "model": cand.name,
                    "mode": mode,
                    **rate,
                    "precision": cand.precision,
                    "tflops": tflops,
                    "peak_fraction": tflops / peak_cand if peak_cand and tflops is not None else None,
                    "first_step_s": cand.first_step_s[mode],
                    "peak_mem_mb": cand.peak_mem_mb.get(mode),
                    "params": cand.params,
                }
            )
            by_name[cand.name] = rows[-1]
        if spec.vs_timm:
            ratios[mode] = by_name[candidates[0].name]["img_per_s"] / by_name["timm"]["img_per_s"]
        base = by_name[candidates[0].name]
        for cand in candidates[1:]:
            row = by_name[cand.name]
            memory = row["peak_mem_mb"] / base["peak_mem_mb"] if row["peak_mem_mb"] and base["peak_mem_mb"] else None
            vs_base.setdefault(mode, {})[cand.name] = {"step_time": row["step_ms"] / base["step_ms"], "memory": memory}
    auto = None
    if spec.auto_why is not None:
        fp32 = "vitkit fp32" if spec.precision != "fp32" else None
        speedup = {mode: found[fp32]["step_time"] for mode, found in vs_base.items() if fp32 in found}
        auto = {"precision": spec.precision, "why": spec.auto_why, "speedup_vs_fp32": speedup}
    compile_auto = compile_auto_trial(spec, device, candidates[0].precision) if spec.compile == "auto" else None
    return {
        "model": spec.name,
        "precision_auto": auto,
        "compile_auto": compile_auto,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": spec.precision,
        "compile": spec.compile,
        "batch_size": spec.batch_size,
        "input": [spec.in_chans, spec.img_size, spec.img_size],
        "params": params,
        "gflops_per_img": flops / 1e9,
        "gmacs_per_img": gmacs(flops),
        "peak_tflops": peak,
        "process_peak_rss_mb": process_peak_rss_mb(),
        "memory": "allocator peak of one step"
        if device.type == "cuda"
        else "peak RSS one step adds to a fresh process",
        "timing": {"iters": spec.iters, "repeats": spec.repeats, "warmup": spec.warmup},
        "rows": rows,
        "ratios": ratios,
        "vs_base": vs_base,
    }
