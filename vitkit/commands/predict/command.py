"""``vitkit predict``: classify image files in batches; rich table, optional JSON and image grid."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vitkit.commands.predict.predictor import Prediction, Predictor, collect_images
from vitkit.engine.console import console
from vitkit.errors import UserError

MAX_PANELS = 64  # images drawn in the --out grid (the first ones predicted)
MAX_ROWS = 200  # rows printed in the table; --json holds all
THUMB = 160  # longest side of the images kept for the grid, in pixels


@dataclass
class Outcome:
    """All predictions, plus thumbnails (and attention maps) of the first ``MAX_PANELS`` images predicted."""

    predictions: list[Prediction] = field(default_factory=list)
    thumbs: list[tuple[Prediction, torch.Tensor, Any]] = field(default_factory=list)
    attention_note: str | None = None
    multi_label: bool = False  # every label above its threshold, not the top k

    @property
    def predicted(self) -> int:
        return sum(p.error is None for p in self.predictions)


def _thumbnail(image: torch.Tensor) -> torch.Tensor:
    """A float ``(C, H, W)`` image shrunk so its longest side is at most ``THUMB`` pixels."""
    h, w = image.shape[-2:]
    scale = THUMB / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return torch.nn.functional.interpolate(image[None], size, mode="bilinear", antialias=True)[0]


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    topk: int = 3,
    batch_size: int = 64,
    keep: int = MAX_PANELS,
    attention: bool = False,
) -> Outcome:
    """Predict ``files`` in batches with a progress bar; unreadable files become error rows."""
    outcome = Outcome(multi_label=predictor.multi_label)
    progress = Progress(
        TextColumn("predict"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("predict", total=len(files))
        for start in range(0, len(files), batch_size):
            chunk = [(str(f), f) for f in files[start : start + batch_size]]
            tensors, results = predictor.read_batch(chunk)
            ok = [i for i, t in enumerate(tensors) if t is not None]
            if ok:
                images = [tensors[i] for i in ok]
                for i, top in zip(ok, predictor.topk(predictor.probabilities(images), topk), strict=True):
                    results[i].topk = top
                kept = ok[: max(0, keep - len(outcome.thumbs))]
                pictures = [predictor.image_tensor(chunk[i][1]) for i in kept]  # whole images, for the grid
                maps: list[Any] = [None] * len(kept)
                if attention and kept and outcome.attention_note is None:
                    maps = _attention(predictor, [tensors[i] for i in kept], pictures, outcome) or maps
                for i, picture, amap in zip(kept, pictures, maps, strict=True):
                    outcome.thumbs.append((results[i], _thumbnail(picture), amap))
            outcome.predictions += results
            progress.advance(task, len(chunk))
    return outcome


def _attention(
    predictor: Predictor, views: list[torch.Tensor], pictures: list[torch.Tensor], outcome: Outcome
) -> list[Any] | None:
    """Attention maps for the model's ``views`` at the size of the ``pictures``' thumbnails; a model that
    cannot give them leaves a note instead."""
    from vitkit.commands.predict.attention_maps import attention_maps

    try:
        sizes = [tuple(_thumbnail(t).shape[-2:]) for t in pictures]
        maps = attention_maps(predictor.model, predictor.to_input(views), sizes)
    except UserError as err:
        outcome.attention_note = str(err)
        return None
    return maps


def print_table(outcome: Outcome, topk: int) -> None:
    labelled = any(p.true_label is not None for p in outcome.predictions)
    table = Table(title=f"predictions ({outcome.predicted} of {len(outcome.predictions)} images)")
    table.add_column("image", overflow="fold")
    header = f"top-{topk} (probability)" if topk > 1 else "prediction (probability)"
    table.add_column("labels above their thresholds (probability)" if outcome.multi_label else header)
    if labelled:
        table.add_column("true")
    rows = outcome.predictions
    for p in rows[:MAX_ROWS]:
        if p.error:
            cells = [p.source, f"[red]error: {p.error}[/]"] + ([""] if labelled else [])
        elif not p.topk:
            cells = [p.source, "[dim](no label above its threshold)[/]"] + ([""] if labelled else [])
        else:
            top = ", ".join(f"{label} {prob:.3f}" for label, prob in p.topk)
            cells = [p.source, f"[bold]{top.split(',')[0]}[/]{top[len(top.split(',')[0]) :]}"]
            if labelled:
                mark = "" if p.correct is None else ("[green]right[/]" if p.correct else "[red]wrong[/]")
                cells.append(f"{p.true_label or ''} {mark}".strip())
        table.add_row(*cells)
    console.print(table)
    if len(rows) > MAX_ROWS:
        console.print(f"({len(rows) - MAX_ROWS} more rows not shown; --json writes them all)")
    scored = [p.correct for p in rows if p.correct is not None]
    if scored:
        console.print(f"accuracy on {len(scored)} images in class-named folders: {sum(scored) / len(scored):.4f}")


def write_json(outcome: Outcome, predictor: Predictor, path: Path, topk: int) -> None:
    data = {
        "model": predictor.source,
        "classes": predictor.classes,
        "topk": topk,
        **(
            {"thresholds": dict(zip(predictor.classes, predictor.thresholds, strict=True))}
            if predictor.multi_label
            else {}
        ),
        "predicted": outcome.predicted,
        "errors": len(outcome.predictions) - outcome.predicted,
        "results": [p.as_dict() for p in outcome.predictions],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def panels(outcome: Outcome) -> tuple[list[Any], int | None]:
    """Grid panels (and column count): one per image, or image + rollout + last layer with attention maps."""
    from vitkit.evaluation.report import caption
    from vitkit.viz import GREEN, RED, Panel

    out: list[Any] = []
    with_maps = any(m is not None for _, _, m in outcome.thumbs)
    for p, thumb, amap in outcome.thumbs:
        image = thumb.clamp(0, 1).permute(1, 2, 0).numpy()
        color = "black" if p.correct is None else GREEN if p.correct else RED
        name = Path(p.source).name
        name = name if len(name) <= 24 else "…" + name[-23:]
        if outcome.multi_label:  # every label above its threshold, one a line
            text = "\n".join(f"{label} ({prob:.0%})" for label, prob in p.topk) or "(no label)"
        else:
            text = caption(p.label, p.probability, p.true_label)
        out.append(Panel(image, f"{name}\n{text}", color))
        if with_maps:
            last = "last layer, CLS" if amap.pooling == "cls" else "last layer, mean token"
            out.append(Panel(image, "attention rollout", overlay=amap.rollout.numpy()))
            out.append(Panel(image, last, overlay=amap.last.numpy()))
    return out, 3 if with_maps else None


def run_predict(
    target: str,
    paths: Sequence[str],
    topk: int = 3,
    out: str | None = None,
    json_path: str | None = None,
    attention: bool = False,
    device: str = "auto",
    batch_size: int = 64,
    tta: str | None = None,
) -> int:
    """The command: 0 when at least one image was predicted, 1 when none was; ``tta``: average the
    probabilities over test-time augmented views (``evaluation.tta``)."""
    if topk < 1:
        raise UserError(f"--topk must be >= 1, got {topk}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    predictor = Predictor.load(target, device, tta)
    files = collect_images(paths)
    if not files:
        raise UserError(f"no files found under {', '.join(paths)}")
    outcome = predict_files(predictor, files, topk, batch_size, attention=attention)
    print_table(outcome, topk)
    if outcome.attention_note:
        console.print(f"[yellow]no attention maps:[/] {outcome.attention_note}")
    if json_path:
        write_json(outcome, predictor, Path(json_path), topk)
        console.print(f"wrote {json_path}")
    if attention and not out:
        out = "attention.png"
    if out and outcome.thumbs:
        from vitkit.viz import plot_grid

        grid, cols = panels(outcome)
        shown = len(outcome.thumbs)
        more = f", first {shown} of {outcome.predicted}" if shown < outcome.predicted else ""
        what = "predictions and attention (rollout, last layer)" if cols else "predictions"
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        plot_grid(grid, Path(out), f"{predictor.name}: {what}{more}", cols)
        console.print(f"wrote {out}")
    return 0 if outcome.predicted else 1
