"""``vitkit export``: a run's model as safetensors, TorchScript or ONNX, optionally pruned or int8-quantized,
or as timm's Hugging Face Hub folder (``--format hf``, ``vitkit.commands.export.hub_folder``).

Each step reports what it changed: test accuracy before/after pruning and quantization, the int8 model's
CPU speed against fp32, and for TorchScript/ONNX the largest logit difference from the PyTorch model
(checked against ``PARITY_ATOL``); for ``hf`` the same for the folder read back by timm (or vitkit).

Calibration: the TorchScript and ONNX graphs include the run's temperature (their ``logits`` output is
``model(x) / temperature``, so a softmax of it gives ``predict``'s probabilities; the argmax is unchanged);
a safetensors export holds the raw weights and the temperature in its metadata, as ``model.safetensors``
does. Every format's metadata states ``temperature`` and, for the graphs, ``logits_divided_by_temperature``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.table import Table
from torch import nn

from vitkit import extras
from vitkit.engine.console import console
from vitkit.errors import UserError
from vitkit.evaluation.calibration import TemperatureScaled
from vitkit.runs.finished import FinishedRun, open_run

PARITY_ATOL = 1e-4  # max |logit difference| allowed between an exported model and the PyTorch one (fp32)
HF_PARITY_ATOL = 1e-5  # the hf folder holds the same fp32 weights, read back by timm's own ViT
SUFFIXES = {"safetensors": ".safetensors", "torchscript": ".torchscript.pt", "onnx": ".onnx"}
FOLDERS = {"hf": "hf"}  # formats that write a folder: its default name under <run>/export/
FORMATS = (*SUFFIXES, *FOLDERS)
#: What a format needs beyond vitkit's dependencies; vitkit's extra of the format's name installs it.
FORMAT_PACKAGES = {"onnx": ("onnx", "onnxscript")}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's deprecation and tracer warnings around export calls (they are not the user's concern)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def prune_linear(model: nn.Module, amount: float) -> float:
    """Zero the ``amount`` smallest-magnitude Linear weights across all layers, made permanent; the sparsity."""
    from torch.nn.utils import prune

    layers = linear_layers(model)
    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=amount)
    for m in layers:
        prune.remove(m, "weight")
    zeros = sum(int((m.weight == 0).sum()) for m in layers)
    return zeros / sum(m.weight.numel() for m in layers)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (weights int8, activations quantized per batch)."""
    with quiet():
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, torch.qint8)


@torch.no_grad()
def seconds_per_batch(model: Any, x: torch.Tensor, repeats: int = 20) -> float:
    """Median wall time of one forward pass over ``x`` on the CPU, after warm-up."""
    for _ in range(3):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def max_logit_diff(reference: nn.Module, run: Any, x: torch.Tensor) -> float:
    """Largest absolute difference between ``reference(x)`` and ``run(x)`` (a callable on a CPU tensor)."""
    return float((reference(x).float() - torch.as_tensor(run(x)).float()).abs().max())


# ------------------------------------------------------------------------------------------ writers


def write_safetensors(model: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    from vitkit.runs.checkpoint import save_safetensors

    save_safetensors(model, path, metadata)


def write_torchscript(model: nn.Module, x: torch.Tensor, path: Path, metadata: dict[str, Any]) -> Any:
    """Traced TorchScript with the metadata as ``vitkit.json`` extra file; returns the reloaded module."""
    with quiet():
        traced = torch.jit.trace(model, x)
        torch.jit.save(traced, str(path), _extra_files={"vitkit.json": json.dumps(metadata)})
        return torch.jit.load(str(path))


def require_format_packages(fmt: str) -> None:
    """Raise a one-line ``UserError`` naming the extra to install when a package ``fmt`` needs is missing."""
    if fmt in FORMAT_PACKAGES:
        extras.require(fmt, *FORMAT_PACKAGES[fmt], what=f"--format {fmt}")


def write_onnx(model: nn.Module, x: torch.Tensor, path: Path, metadata: dict[str, Any]) -> tuple[Any, str]:
    """ONNX (dynamo exporter, dynamic batch), checked by ``onnx.checker``, metadata as model properties.

    Returns a runner ``x -> logits`` and what runs it: onnxruntime when importable, else onnx's reference
    evaluator (pure Python, slow, fine for a parity check).
    """
    require_format_packages("onnx")
    import onnx

    with quiet():
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            dynamic_shapes=({0: "batch"},),
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
        )
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return (lambda t: session.run(None, {"images": t.numpy()})[0]), "onnxruntime"
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        return (lambda t: evaluator.run(None, {"images": t.numpy()})[0]), "onnx.reference (no onnxruntime)"


# ----------------------------------------------------------------------------------------- command


@dataclass
class ExportReport:
    """What ``export`` measured; accuracies are on the test split (``None`` without a recipe)."""

    path: Path
    fmt: str
    acc_before: float | None = None
    acc_pruned: float | None = None
    sparsity: float | None = None
    acc_int8: float | None = None
    fp32_s: float | None = None
    int8_s: float | None = None
    parity: float | None = None
    parity_by: str = ""
    tolerance: float = PARITY_ATOL
    batch: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float | None:
        return self.fp32_s / self.int8_s if self.fp32_s and self.int8_s else None


def load_test_split(run: FinishedRun) -> tuple[Any, torch.Tensor]:
    """The run's test-split loader on the CPU and one batch from it (for speed and parity)."""
    from vitkit.data import build_loader
    from vitkit.data.loaders import eval_transform

    data = run.load_data(only=("test",))
    transform = eval_transform(run.data)  # the evaluation view of training, eval and predict
    loader = build_loader(data.test, 256, transform, torch.device("cpu"), False, run.recipe().data.num_workers)
    return loader, next(iter(loader))[0][:64]


def accuracy(model: Any, loader: Any) -> float:
    from vitkit.evaluation.evaluate import evaluate

    return evaluate(model, loader, torch.device("cpu")).acc


def export(
    target: str | Path,
    fmt: str = "safetensors",
    quantize: str | None = None,
    prune: float | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> ExportReport:
    """Export (and compress) the model of a run directory or checkpoint; measures what each step changed.

    The default file goes to ``<run>/export/``, never over what the run wrote; an existing ``out``
    is replaced only with ``force``."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in FOLDERS and (quantize or prune):
        raise UserError(f"--format {fmt} exports the trained weights as they are; drop --quantize and --prune")
    if quantize not in (None, "int8"):
        raise UserError(f"--quantize: only 'int8' is supported, got {quantize!r}")
    if quantize and fmt != "torchscript":
        raise UserError(f"--quantize int8 cannot be saved as {fmt} (packed int8 weights); use --format torchscript")
    if prune is not None and not 0.0 < prune < 1.0:
        raise UserError(f"--prune: expected a share of weights in (0, 1), got {prune}")
    require_format_packages(fmt)
    loaded = open_run(target)
    model, meta = loaded.model, loaded.data
    tags = (f".pruned{round(prune * 100)}" if prune else "") + (".int8" if quantize else "")
    name = FOLDERS[fmt] if fmt in FOLDERS else f"model{tags}{SUFFIXES[fmt]}"
    path = Path(out) if out else loaded.run_dir / "export" / name
    if path.exists() and not force and fmt not in FOLDERS:  # a folder may exist empty: hub_folder checks
        raise UserError(f"{path} exists; pass --force to overwrite it (or --out another file)")
    report = ExportReport(path, fmt)
    metadata = {"model": loaded.spec, "data": meta, "plugins": (loaded.recipe_data or {}).get("plugins", [])}
    metadata["temperature"] = loaded.temperature
    loader = None
    if loaded.recipe_data is None:
        report.notes.append(f"{loaded.source.name} holds no recipe (no dataset): accuracies not measured")
        x = torch.rand(64, meta["in_chans"], meta["img_size"], meta["img_size"])
    else:
        loader, x = load_test_split(loaded)
        report.acc_before = accuracy(model, loader)
    report.batch = len(x)
    if prune:
        report.sparsity = prune_linear(model, prune)
        report.acc_pruned = accuracy(model, loader) if loader else None
    exported = model
    if quantize:
        exported = quantize_int8(model)
        report.acc_int8 = accuracy(exported, loader) if loader else None
        report.fp32_s = seconds_per_batch(model, x)
        report.int8_s = seconds_per_batch(exported, x)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "hf":
        from vitkit.commands.export.hub_folder import write_hf_folder

        hub = write_hf_folder(loaded, path, x, force)
        report.parity, report.parity_by, report.tolerance = hub.parity, hub.parity_by, HF_PARITY_ATOL
        if not hub.timm_loads:
            report.notes.append(
                f"timm cannot load this folder ({hub.why_not}); vitkit.load and vitkit.create_model('local-dir:...') do"
            )
    elif fmt == "safetensors":
        write_safetensors(model, path, metadata)
        return report
    else:
        graph_metadata = {**metadata, "logits_divided_by_temperature": True}
        report.notes.append(f"the graph's logits are divided by the run's temperature {loaded.temperature:.4g}")
        if fmt == "torchscript":
            graph = TemperatureScaled(exported, loaded.temperature).eval()
            reloaded = write_torchscript(graph, x, path, graph_metadata)
            report.parity, report.parity_by = max_logit_diff(graph, reloaded, x), "torch.jit.load"
        else:
            graph = TemperatureScaled(model, loaded.temperature).eval()
            runner, report.parity_by = write_onnx(graph, x, path, graph_metadata)
            report.parity = max_logit_diff(graph, runner, x)
    if report.parity is not None and report.parity > report.tolerance:
        raise RuntimeError(f"{path}: exported logits differ by {report.parity:.2e} (> {report.tolerance:.0e})")
    return report


def print_report(report: ExportReport) -> None:
    table = Table(title=f"vitkit export: {report.fmt}", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")

    def acc(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    files = [p for p in report.path.rglob("*") if p.is_file()] if report.path.is_dir() else [report.path]
    size = sum(p.stat().st_size for p in files) / 1e6
    shown = (
        f"{report.path}/ ({len(files)} files, {size:.2f} MB)"
        if report.path.is_dir()
        else f"{report.path} ({size:.2f} MB)"
    )
    table.add_row("folder" if report.path.is_dir() else "file", shown)
    table.add_row("test accuracy (fp32)", acc(report.acc_before))
    if report.sparsity is not None:
        table.add_row("pruned Linear weights", f"{report.sparsity:.1%}")
        table.add_row("test accuracy (pruned)", acc(report.acc_pruned))
    if report.int8_s is not None:
        table.add_row("test accuracy (int8)", acc(report.acc_int8))
        table.add_row(
            f"CPU time / batch of {report.batch}",
            f"fp32 {report.fp32_s * 1e3:.2f} ms, int8 {report.int8_s * 1e3:.2f} ms ({report.speedup:.2f}x)",
        )
    if report.parity is not None:
        table.add_row("max |logit diff|", f"{report.parity:.2e} (tolerance {report.tolerance:.0e}; {report.parity_by})")
    console.print(table)
    for note in report.notes:
        console.print(note)


def run_export(
    target: str,
    fmt: str,
    quantize: str | None = None,
    prune: float | None = None,
    out: str | None = None,
    force: bool = False,
) -> ExportReport:
    report = export(target, fmt, quantize, prune, out, force)
    print_report(report)
    return report
