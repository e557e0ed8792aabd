"""A hooks-only vitkit plugin: every run, as TensorBoard shows it.

Through vitkit's lifecycle hooks it writes, into ``<run dir>/tb/`` (or
``$TENSORBOARD_LOGDIR/<recipe name>/<run time>/`` when that variable is set):

- ``epoch/<column>``: every numeric column of ``metrics.csv`` (losses, accuracies, lr, time, img/s), step = epoch;
- ``step/lr``: the learning rate of every optimizer update, step = update count (kept in memory during the
  epoch and handed to the writer at its end: one hand-over per step to TensorBoard's writer thread cost
  ~5 ms of GIL switching each, 23 s of a 67 s digits run);
- the model graph, once (not again on ``--resume``), only with ``VITKIT_TENSORBOARD_GRAPH=1`` (tracing
  costs a few seconds; off by default as in Lightning's ``TensorBoardLogger``);
- at the end: the test confusion matrix (image and text) and the most confident mistakes (image),
  and the resolved recipe as hparams with ``hparam/test_acc`` and ``hparam/best_val_acc`` as metrics,
  so TensorBoard's HParams tab compares runs.

A run that stops on an error or Ctrl-C flushes and closes its writer: what was logged stays readable.
It writes on rank 0 only. Set ``VITKIT_TENSORBOARD=0`` to switch it off without uninstalling it.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import vitkit

ENV_OFF = "VITKIT_TENSORBOARD"
ENV_GRAPH = "VITKIT_TENSORBOARD_GRAPH"
_writers: dict[Path, Any] = {}  # run directory -> SummaryWriter (one run at a time, several in `compare`)
_pending: dict[Path, list[tuple[int, float]]] = {}  # run directory -> this epoch's (step, lr), not yet written


def _enabled() -> bool:
    return os.environ.get(ENV_OFF, "1").strip().lower() not in ("0", "false", "no", "off") and (
        int(os.environ.get("RANK", "0")) == 0
    )


def log_dir(run: Any) -> Path:
    """Where this run's events go: ``$TENSORBOARD_LOGDIR/<name>/<run time>`` or ``<run dir>/tb``."""
    root = os.environ.get("TENSORBOARD_LOGDIR", "").strip()
    run_dir = Path(run.run_dir)
    return Path(root).expanduser() / run.recipe.name / run_dir.name if root else run_dir / "tb"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": "[1, 2]"}``: values TensorBoard's hparams accept."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(data, (bool, int, float, str)):
        return {prefix: data}
    return {prefix: json.dumps(data) if isinstance(data, (list, tuple)) else str(data)}


def _writer(run: Any) -> Any:
    return _writers.get(Path(run.run_dir))


def _write_pending(run_dir: Path, writer: Any) -> None:
    """Hand the buffered per-step LRs to the writer, all at once."""
    for step, lr in _pending.pop(run_dir, []):
        writer.add_scalar("step/lr", lr, step)


def _add_graph(writer: Any, model: Any, device: Any) -> None:
    """The model graph, traced on one zero image in eval mode, without touching the training RNG."""
    import torch

    size, chans = getattr(model, "img_size", None), getattr(model, "in_chans", None)
    if not isinstance(size, int) or not isinstance(chans, int):
        return  # not a vitkit ViT: the input shape is unknown
    was_training = model.training
    model.eval()
    try:
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            torch.no_grad(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
            writer.add_graph(model, torch.zeros(1, chans, size, size, device=device), use_strict_trace=False)
    finally:
        model.train(was_training)


@vitkit.hookimpl
def vitkit_on_run_start(run: Any) -> None:
    """Open the run's event writer; log the graph on a fresh run."""
    if not _enabled():
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir(run)))
    _writers[Path(run.run_dir)] = writer
    # not again on --resume; not under torchrun: a forward on rank 0 alone would wait forever for
    # the other ranks' collectives (FSDP shards the model in place)
    graph = os.environ.get(ENV_GRAPH, "0").strip().lower() in ("1", "true", "yes", "on")
    if graph and not run.history and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        _add_graph(writer, run.model, run.device)
    writer.flush()


@vitkit.hookimpl(optionalhook=True)  # vitkit versions without this hook still load the plugin
def vitkit_on_train_step(run: Any, step: int, lr: float) -> None:
    """The LR of this optimizer update, buffered until the epoch ends."""
    run_dir = Path(run.run_dir)
    if run_dir in _writers:
        _pending.setdefault(run_dir, []).append((step, lr))


@vitkit.hookimpl
def vitkit_on_epoch_end(run: Any, epoch: int, metrics: dict[str, Any]) -> None:
    """Every numeric metric of the epoch (the columns of metrics.csv and more)."""
    writer = _writer(run)
    if writer is None:
        return
    _write_pending(Path(run.run_dir), writer)
    for key, value in metrics.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"epoch/{key}", value, epoch)
    writer.flush()


def _image(path: Path) -> Any:
    """An ``(H, W, 3)`` uint8 array of a PNG, or ``None``."""
    if not path.is_file():
        return None
    import matplotlib.image
    import numpy as np

    image = matplotlib.image.imread(path)[..., :3]
    return (image * 255).astype(np.uint8) if image.dtype != np.uint8 else image


def _confusion_image(matrix: list[list[int]]) -> Any:
    """The confusion matrix as a grey ``(1, H, W)`` image, each row normalised (no matplotlib needed)."""
    import torch

    counts = torch.tensor(matrix, dtype=torch.float32)
    rows = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    scale = max(1, 256 // max(1, len(matrix)))
    return rows.repeat_interleave(scale, 0).repeat_interleave(scale, 1).unsqueeze(0)


def _confusion_text(matrix: list[list[int]], classes: list[str]) -> str:
    """A markdown table: rows are true classes, columns predicted ones."""
    head = "| true \\ predicted | " + " | ".join(classes) + " |"
    rule = "|" + " --- |" * (len(classes) + 1)
    rows = [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(classes, matrix, strict=True)]
    return "\n".join([head, rule, *rows])


@vitkit.hookimpl
def vitkit_on_run_end(run: Any, summary: dict[str, Any]) -> None:
    """Confusion matrix, mistakes, hparams; close the writer."""
    writer = _writers.pop(Path(run.run_dir), None)
    if writer is None:
        return
    try:
        run_dir, step = Path(run.run_dir), int(summary.get("epochs_run", 0))
        _write_pending(run_dir, writer)
        report_path = run_dir / "report_test.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        if "confusion" in report:
            writer.add_image("test/confusion_matrix", _confusion_image(report["confusion"]), step)
            writer.add_text("test/confusion_matrix", _confusion_text(report["confusion"], list(run.classes)), step)
        for name, tag in (("confusion.png", "test/confusion_plot"), ("misclassified.png", "test/misclassified")):
            image = _image(run_dir / name)
            if image is not None:
                writer.add_image(tag, image, step, dataformats="HWC")
        metrics = {f"hparam/{key}": float(summary[key]) for key in ("test_acc", "best_val_acc") if key in summary}
        writer.add_hparams(flatten(run.recipe.to_dict()), metrics, run_name=".", global_step=step)
    finally:
        writer.close()


@vitkit.hookimpl(optionalhook=True)  # vitkit versions without this hook still load the plugin
def vitkit_on_run_failed(run: Any) -> None:
    """Flush and close the writer of a run that stopped on an error or Ctrl-C."""
    writer = _writers.pop(Path(run.run_dir), None)
    if writer is not None:
        _write_pending(Path(run.run_dir), writer)
        writer.close()
