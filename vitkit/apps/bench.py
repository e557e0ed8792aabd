"""Throughput measurement: img/s, step time, FLOPs and memory of training steps and inference.

Several candidates (vitkit's model, timm's twin) are timed interleaved in one process
(A B, B A, A B, ... after a warm-up) and the median of the repeats is kept, so a machine
whose load drifts penalises both alike. ``vitkit bench`` and ``benchmarks/`` share this code.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

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


def vit_config(model: nn.Module) -> dict[str, Any]:
    """The timm ``VisionTransformer`` keyword arguments that rebuild a vitkit ViT (``UserError`` if none do):
    ``timm_bridge.timm_config`` plus the same regularisation, so a training step does the same work."""
    from vitkit.models import VisionTransformer
    from vitkit.models.timm_bridge import timm_config

    if not isinstance(model, VisionTransformer):
        raise UserError(f"--vs timm: {type(model).__name__} is not vitkit's VisionTransformer")
    if model.pos_embed_kind in ("sincos", "rope2d") or model.mlp_kind != "mlp":  # not the same work in timm
        raise UserError("--vs timm: timm's ViT has no fixed sin-cos or rotary positions or SwiGLU; use a 'learn' model")
    try:
        config = timm_config(model)
    except UserError as err:
        raise UserError(f"--vs timm: {err}") from None
    block = model.blocks[0]
    rate = model.pos_drop.p
    config.update(
        drop_rate=rate,
        pos_drop_rate=rate,
        proj_drop_rate=rate,
        attn_drop_rate=block.attn.attn_drop.p,
        drop_path_rate=model.blocks[-1].drop_path1.p,
    )
    return config


def timm_twin(model: nn.Module) -> nn.Module:
    """timm's ``VisionTransformer`` with ``model``'s configuration and a copy of its weights."""
    from vitkit.models.timm_bridge import to_timm_model

    config = vit_config(model)  # checks and the regularisation; timm_bridge builds and loads
    regularisation = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
    twin = to_timm_model(model, **{key: config[key] for key in regularisation})
    return twin.to(next(model.parameters()).device)


@dataclass
class Candidate:
    """One model under measurement, with the step functions built for it."""

    name: str
    model: nn.Module
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
    """CUDA: the most memory allocated during one call (every candidate's weights resident). CPU: ``None``."""
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


# ------------------------------------------------------------------------------------ bench


@dataclass
class BenchSpec:
    """What to measure: one model, input shape, batch, precision, modes, and how long."""

    model: nn.Module
    name: str
    img_size: int
    in_chans: int
    num_classes: int
    batch_size: int = 64
    precision: str = "fp32"
    compile: bool = False
    modes: tuple[str, ...] = ("train", "infer")
    vs_timm: bool = False
    iters: int = 5
    repeats: int = 7
    warmup: int = 2


def _rate(seconds: list[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(seconds)
    return {"img_per_s": batch_size / median, "step_ms": median * 1e3, "spread": (max(seconds) - min(seconds)) / median}


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Measure ``spec``: one row per (candidate, mode), plus vitkit/timm ratios when ``vs_timm``."""
    from vitkit.engine.flops import count_flops, gmacs

    if spec.precision not in DTYPES:
        raise UserError(f"--precision: expected fp32, bf16 or fp16, got {spec.precision!r}")
    device = next(spec.model.parameters()).device
    if spec.precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on CPU")
    candidates = [Candidate("vitkit", spec.model)]
    if spec.vs_timm:
        candidates.append(Candidate("timm", timm_twin(spec.model)))
    flops = count_flops(spec.model, spec.in_chans, spec.img_size)  # the same for both (same graph)
    params = sum(p.numel() for p in spec.model.parameters())
    for cand in candidates:
        cand.params = sum(p.numel() for p in cand.model.parameters())
        runner = torch.compile(cand.model) if spec.compile else cand.model
        for mode in spec.modes:
            if mode == "train":
                fn = train_step(runner, spec.batch_size, spec.img_size, spec.in_chans, spec.num_classes, spec.precision)
            else:
                fn = infer_step(runner, spec.batch_size, spec.img_size, spec.in_chans, spec.precision)
            cand.steps[mode] = fn
            cand.first_step_s[mode] = first_step_time(fn, device)
            mem = step_peak_memory_mb(fn, device)
            if mem is not None:
                cand.peak_mem_mb[mode] = mem

    peak = peak_tflops(device, spec.precision)
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    for mode in spec.modes:
        steps = {cand.name: cand.steps[mode] for cand in candidates}
        samples = time_interleaved(steps, device, spec.iters, spec.repeats, spec.warmup)
        for cand in candidates:
            rate = _rate(samples[cand.name], spec.batch_size)
            step_flops = flops * (3 if mode == "train" else 1)  # backward ~ 2x forward
            tflops = step_flops * rate["img_per_s"] / 1e12
            rows.append(
                {
                    "model": cand.name,
                    "mode": mode,
                    **rate,
                    "tflops": tflops,
                    "peak_fraction": tflops / peak if peak else None,
                    "first_step_s": cand.first_step_s[mode],
                    "peak_mem_mb": cand.peak_mem_mb.get(mode),
                    "params": cand.params,
                }
            )
        if spec.vs_timm:
            ratios[mode] = rows[-2]["img_per_s"] / rows[-1]["img_per_s"]
    return {
        "model": spec.name,
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
        "timing": {"iters": spec.iters, "repeats": spec.repeats, "warmup": spec.warmup},
        "rows": rows,
        "ratios": ratios,
    }
