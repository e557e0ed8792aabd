"""The model card (``README.md``) of an hf export: what the model classifies, its data and splits, its
test scores with the per-class report, the recipe, intended use and limits, and how to load it.

Every number and claim comes from what the run wrote: ``summary.json`` (multi-label runs: exact match
and mAP at the per-class thresholds chosen on val, never the exact match at 0.5 that ``test_acc``
holds), ``report_test.json`` and the audit (the run's own in ``summary.json``, or ``vitkit audit RUN``'s
``audit/audit.json`` when there is one): a leak of test images into train replaces "held out" by its
caveat (``vitkit.audit.duplicates.leak_note``)."""

from __future__ import annotations

from typing import Any

from vitkit.audit.duplicates import leak_note
from vitkit.runs.finished import FinishedRun


def _pct(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, (int, float)) else "not measured"


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def front_matter(timm_loads: bool, dataset: str) -> str:
    tags = ["image-classification", "vitkit"] + (["timm"] if timm_loads else [])
    lines = ["---", "tags:", *(f"- {t}" for t in tags), "pipeline_tag: image-classification"]
    lines.append(f"library_name: {'timm' if timm_loads else 'vitkit'}")
    if dataset and dataset not in ("imagefolder", "csv"):
        lines += ["datasets:", f"- {dataset}"]
    return "\n".join([*lines, "---", ""])


def headline(summary: dict[str, Any], report: dict[str, Any]) -> str:
    """The card's one-line score: multi-label exact match and mAP at the val thresholds, else test accuracy."""
    if summary.get("multi_label") or report.get("multi_label"):
        exact = summary.get("test_exact_match", report.get("exact_match"))
        return (
            f"test exact match **{_pct(exact)}** (every label of an image right, at the per-class thresholds "
            f"chosen on val), test mAP **{_num(summary.get('test_map', report.get('map')))}**"
        )
    return f"test accuracy **{_pct(report.get('acc', summary.get('test_acc')))}**"


def data_section(summary: dict[str, Any], classes: list[str]) -> list[str]:
    data = summary.get("data") or {}
    sizes = summary.get("split_sizes") or {}
    lines = ["## Data", ""]
    dataset = data.get("dataset") or "unknown"
    where = f" (layout: {data['layout']})" if data.get("layout") else ""
    lines.append(f"- **Dataset:** {dataset}{where}")
    if sizes:
        lines.append("- **Split sizes:** " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
        leak = leak_note(summary)
        if leak:
            lines.append(
                f"- **{leak}.** The test split never chose the best epoch nor any setting, but the audit "
                "found copies of its images in train: the test scores below overstate what it does on new images."
            )
        else:
            lines.append("- The test split was held out: it never chose the best epoch nor any setting.")
    else:
        lines.append("- **Split sizes:** not recorded (exported from a checkpoint outside its run directory)")
    counts = data.get("class_counts") or {}
    if counts:
        splits = list(counts)
        lines += ["", "| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        for name in classes:
            lines.append(f"| {name} | " + " | ".join(str(counts[s].get(name, 0)) for s in splits) + " |")
    return [*lines, ""]


def multilabel_evaluation(summary: dict[str, Any], report: dict[str, Any], thresholds: list[float]) -> list[str]:
    """A multi-label run's scores: exact match and mAP at the thresholds chosen on val, per-class rows."""
    count = report.get("count")
    on = f" on {count} test images" if count else " on the test split"
    exact = summary.get("test_exact_match", report.get("exact_match"))
    lines = [
        f"- **Test exact match:** {_pct(exact)}{on} (an image counts when its predicted label set is exactly "
        "its true one; labels predicted at the per-class thresholds below, chosen on the validation split)",
        f"- **Test mAP:** {_num(summary.get('test_map', report.get('map')))} (mean over classes of the average "
        "precision; no threshold)",
    ]
    rows = report.get("per_class") or []
    if rows:
        lines += ["", "| class | threshold | AP | precision | recall | F1 | support |", "|---|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['class']} | {row['threshold']:.3f} | {_num(row.get('ap'))} | {_num(row.get('precision'))} "
                f"| {_num(row.get('recall'))} | {_num(row.get('f1'))} | {row.get('support', '-')} |"
            )
        lines += ["", "The whole report is in `report_test.json`."]
    elif thresholds:
        lines.append("- **Thresholds (chosen on val):** " + ", ".join(f"{t:.3f}" for t in thresholds))
    return [*lines, ""]


def evaluation_section(
    summary: dict[str, Any], report: dict[str, Any], thresholds: list[float] | None = None
) -> list[str]:
    lines = ["## Evaluation", ""]
    if summary.get("multi_label") or report.get("multi_label"):
        return [*lines, *multilabel_evaluation(summary, report, list(thresholds or report.get("thresholds") or []))]
    if "acc" not in report and "test_acc" not in summary:
        return [*lines, "Not measured: the export had no run directory with a test report.", ""]
    acc = report.get("acc", summary.get("test_acc"))
    count = report.get("count")
    on = f" on {count} held-out test images" if count else " on the held-out test split"
    lines.append(f"- **Test accuracy:** {_pct(acc)}{on}")
    if report.get("top5") is not None:
        lines.append(f"- **Test top-5 accuracy:** {_pct(report['top5'])}")
    macro = report.get("macro") or {}
    if macro:
        lines.append(
            f"- **Macro precision / recall / F1:** {_num(macro.get('precision'))} / "
            f"{_num(macro.get('recall'))} / {_num(macro.get('f1'))}"
        )
    if summary.get("best_val_acc") is not None:
        lines.append(
            f"- **Best validation accuracy:** {_pct(summary['best_val_acc'])} (epoch {summary.get('best_epoch')})"
        )
    if summary.get("temperature") is not None:
        lines.append(
            f"- **Calibration:** temperature {summary['temperature']:.4g} fitted on the validation split; test ECE "
            f"{_num(summary.get('test_ece'))} before, {_num(summary.get('test_ece_calibrated'))} after. `vitkit.load` "
            "applies it; timm gives the raw logits: divide them by the temperature before the softmax."
        )
    rows = report.get("per_class") or []
    if rows:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        for row in rows:
            lines.append(
                f"| {row['class']} | {_num(row.get('precision'))} | {_num(row.get('recall'))} | "
                f"{_num(row.get('f1'))} | {row.get('support', '-')} |"
            )
        lines += ["", "The whole report is in `report_test.json`; the confusion matrix in `confusion.png`."]
    return [*lines, ""]


def usage_section(config: dict[str, Any], why_not: str) -> list[str]:
    cfg = config.get("pretrained_cfg") or {}
    lines = ["## How to use", ""]
    if not why_not:
        lines += [
            f"timm builds it as `{config['architecture']}` (the name picks timm's class; the `model_args` of "
            "`config.json` set every size), from the Hub or from a local copy of this folder (timm >= 1.0.16):",
            "",
            "```python",
            "import timm",
            "",
            'model = timm.create_model("hf-hub:ORG/NAME", pretrained=True).eval()  # or "local-dir:PATH"',
            "config = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**config)  # the preprocessing below",
            "labels = model.pretrained_cfg['label_names']",
            "```",
            "",
        ]
    else:
        lines += [
            f"**timm cannot build this model**: {why_not}. The folder loads with vitkit (with the "
            "plugins `config.json` names installed, if any).",
            "",
        ]
    lines += [
        "```python",
        "import vitkit",
        "",
        'predictor = vitkit.load("hf-hub:ORG/NAME")  # or a local copy of this folder',
        'predictions = predictor.predict(["photo.jpg"], topk=3)  # label, probability, topk',
        'model = vitkit.create_model("local-dir:PATH")  # the bare nn.Module',
        "```",
        "",
        "Command line: `vitkit predict PATH photo.jpg`.",
        "",
        f"**Preprocessing:** input {tuple(cfg.get('input_size', ()))}, {cfg.get('interpolation')} resize, "
        f"crop_pct {cfg.get('crop_pct')}, crop_mode {cfg.get('crop_mode')} "
        + (
            "(the whole image resized to the input, aspect ratio not kept)"
            if cfg.get("crop_mode") == "squash"
            else "(short side resized to floor(size / crop_pct), centre crop)"
        )
        + f", mean {list(cfg.get('mean', ()))}, std {list(cfg.get('std', ()))}: "
        "`timm.data.create_transform` of this config gives the model exactly vitkit's input.",
        "",
    ]
    return lines


def model_card(
    loaded: FinishedRun,
    config: dict[str, Any],
    why_not: str,
    summary: dict[str, Any],
    report: dict[str, Any],
    recipe_text: str,
    files: list[str],
) -> str:
    """``README.md`` of the Hub folder (timm's front matter, then vitkit's sections)."""
    classes = list(loaded.data["classes"])
    name = (loaded.recipe_data or {}).get("name") or loaded.run_dir.name
    dataset = (summary.get("data") or {}).get("dataset") or ""
    params = sum(p.numel() for p in loaded.model.parameters())
    multi_label = bool(summary.get("multi_label") or report.get("multi_label") or loaded.data.get("thresholds"))
    shown = ", ".join(f"`{c}`" for c in classes[:50]) + (f" and {len(classes) - 50} more" if len(classes) > 50 else "")
    lines = [
        front_matter(not why_not, dataset),
        f"# Model card for {name}",
        "",
        f"An image classifier for **{len(classes)} classes**: {shown}.",
        f"Trained with vitkit from the recipe in `recipe.toml`; {headline(summary, report)}.",
        "",
        "## Model details",
        "",
        f"- **Model:** vitkit `{loaded.spec.get('name')}` ({params / 1e6:.2f} M parameters), "
        + (f"timm `{config['architecture']}`" if not why_not else "no timm equivalent"),
        f"- **Input:** {loaded.data['in_chans']} x {loaded.data['img_size']} x {loaded.data['img_size']}",
        f"- **Classes:** {len(classes)} (`label_names` in `config.json`, in output order)",
        "",
        *data_section(summary, classes),
        *evaluation_section(summary, report, loaded.data.get("thresholds")),
        *usage_section(config, why_not),
        "## Intended use and limits",
        "",
        (
            f"- Multi-label: gives an image every label whose probability reaches its threshold (none, one or "
            f"several of these {len(classes)}); each probability is that label's own sigmoid."
            if multi_label
            else f"- Classifies images into exactly these {len(classes)} classes; any other image still gets one of "
            "them, with a probability that is not a measure of whether it belongs to any."
        ),
        "- The scores above hold for images like the test split's (same source, same kind of capture); "
        "expect less on images from elsewhere. Check it on your own data before relying on it.",
        "- Not for decisions about people or for safety-critical use without an evaluation of that use.",
        "",
    ]
    if recipe_text:
        lines += ["## Training recipe", "", "```toml", recipe_text.rstrip(), "```", ""]
    if files:
        lines += ["## Files", "", "- `config.json`, `model.safetensors`: the model", *(f"- `{f}`" for f in files), ""]
    return "\n".join(lines)
