"""One page to read: ``compare.html`` for a comparison, ``report.html`` in each run directory.

Each page is a single self-contained file: styles inline, plots embedded as base64 PNG
``data:`` URIs, no scripts, no fonts or anything else fetched from the network, so it opens the
same in any browser, offline, attached to a mail or copied elsewhere.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vitkit.audit.duplicates import leak_note

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: right; }
th { background: #f6f8fa; } td.text, th.text { text-align: left; }
tr.best td { font-weight: bold; background: #dafbe1; }
ul.verdicts li { margin: 0.3em 0; } .muted { color: #656d76; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #656d76; font-size: 0.85em; }
.row figure { max-width: 48%; vertical-align: top; }
"""


class Markup(str):
    """HTML that is already escaped (a link, say): ``esc`` and ``table`` keep it as it is."""


def esc(value: Any) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value))


def link(target: Path, text: str, base: Path) -> Markup:
    """A link to ``target`` relative to the folder ``base`` (pages keep working when copied together)."""
    rel = Path(os.path.relpath(target, base)).as_posix()
    return Markup(f'<a href="{html.escape(quote(rel))}">{esc(text)}</a>')


def figure(path: Path, caption: str) -> str:
    """A ``<figure>`` with the PNG at ``path`` embedded (empty string if the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 1, best: int = -1) -> str:
    """An HTML table; the first ``text_columns`` are left-aligned, row ``best`` highlighted."""

    def cells(values: Sequence[Any], tag: str) -> str:
        return "".join(
            f'<{tag} class="text">{esc(v)}</{tag}>' if i < text_columns else f"<{tag}>{esc(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(
        f'<tr class="best">{cells(row, "td")}</tr>' if i == best else f"<tr>{cells(row, 'td')}</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{cells(headers, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _acc(row: dict[str, Any], metric: str) -> str:
    if row["repeats"] < 2 or row.get(f"{metric}_sd") is None:
        return _num(row[metric])
    return f"{row[metric]:.4f} ± {row[metric + '_sd']:.4f} [{row[metric + '_low']:.4f}, {row[metric + '_high']:.4f}]"


def _run_report(run: dict[str, Any], text: str, base: Path) -> str | Markup:
    """A link to a run's report.html, or ``text`` where the run has none."""
    target = Path(run["run_dir"]) / "report.html"
    return link(target, text, base) if target.is_file() else text


def write_compare_html(report: dict[str, Any], plots: Sequence[Path], path: Path) -> Path:
    """``compare.html``: the ranked table (each variant linked to its runs' report.html), the verdicts, the
    banded curves and each run's numbers."""
    rows = report["rows"]
    repeats = max(row["repeats"] for row in rows)
    headers = ["#", "name", "runs", "params", "GFLOPs/img", "GMACs/img", "train img/s", "infer img/s"]
    headers += ["best val acc", "test acc (not ranked on)", "wall s", "report"]
    base = path.parent
    spread = " (mean ± sd [95% interval])" if repeats > 1 else ""
    if spread:
        headers[-4:-2] = [h + spread for h in headers[-4:-2]]
    main = [
        [
            row["rank"],
            row["name"],
            row["repeats"],
            f"{row['params'] / 1e6:.3f} M",
            _num(row["gflops"]),
            _num(row["gmacs"]),
            f"{row['train_img_per_s']:,.0f}",
            f"{row['infer_img_per_s']:,.0f}",
            _acc(row, "best_val_acc"),
            _acc(row, "test_acc"),
            _num(row["wall_time_s"], 1),
            Markup(" ".join(esc(_run_report(run, run["repeat"] or "report.html", base)) for run in row["runs"])),
        ]
        for row in rows
    ]
    runs = [
        [row["name"], run["repeat"] or "-", _run_report(run, run["run_dir"], base), _num(run["best_val_acc"])]
        + [_num(run["test_acc"])]
        for row in rows
        for run in row["runs"]
    ]
    command = ["vitkit compare", *report["sources"]]
    command += [f"--vary {v}" for v in report["vary"]] + [f"--set {v}" for v in report["set"]]
    for key in ("seeds", "folds", "jobs", "tune"):
        if report.get(key) and (key != "jobs" or report[key] > 1):
            command.append(f"--{key} {report[key]}")
    command += [f"--space {v}" for v in report.get("space", [])]
    verdicts = "".join(f"<li>{esc(line)}</li>" for line in [report["verdict"], *report["verdicts"]])
    tuned = [[row["name"], *_tuned(row["tuned"])] for row in rows if row.get("tuned")]
    tuned_html = (
        "<h2>Tuned values (the same budget for every variant)</h2>"
        + table(["variant", "values", "trials", "study"], tuned, text_columns=4)
        if tuned
        else ""
    )
    body = f"""<h1>vitkit compare: ranked by {esc(report["rank_by"])}</h1>
<p class="muted">{esc(" ".join(command))} · {esc(report["created"])}</p>
<h2>Verdicts</h2>
<ul class="verdicts">{verdicts}</ul>
<p class="muted">Ranked on {esc(report["rank_by"])}; test accuracy is shown beside it and never picks the
winner. Paired t-test over matched runs (the same seed or fold for every variant); p &lt; 0.05 is called a
difference, its margin given with a 95% interval; paired differences that are all equal cannot be tested.
Accuracy intervals: Student-t on the logit scale, mapped back, so they stay inside [0, 1].</p>
<h2>Variants</h2>
{table(headers, main, text_columns=2, best=0)}
{tuned_html}
<h2>Curves</h2>
<div class="row">{"".join(figure(p, p.stem.replace("_", " ")) for p in plots)}</div>
<h2>Every run</h2>
{table(["variant", "repeat", "run directory", "best val acc", "test acc"], runs, text_columns=3)}
"""
    path.write_text(page(f"vitkit compare ({report['rank_by']})", body))
    return path


def _tuned(tuned: dict[str, Any]) -> list[Any]:
    """A variant's ``--tune`` result: its best values, the trials its study finished, the study folder."""
    values = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in tuned["params"].items())
    return [values, tuned["trials"], tuned["study_dir"]]


SUMMARY_KEYS = (
    "name",
    "model",
    "params",
    "test_acc",
    "test_map",
    "test_exact_match",
    "test_macro_precision",
    "test_macro_recall",
    "test_macro_f1",
    "test_top5",
    "test_loss",
    "best_val_acc",
    "best_epoch",
    "epochs_run",
    "final_train_loss",
    "wall_time_s",
    "train_img_per_s",
    "device",
    "precision",
    "seed",
    "stop_reason",
    "threads",
)


def _calibration_section(summary: dict[str, Any], report: dict[str, Any], run_dir: Path) -> str:
    """ECE before and after the run's temperature on val and test, and their reliability diagrams."""
    rows = [
        [split, _num(summary.get(f"{split}_ece")), _num(summary.get(f"{split}_ece_calibrated"))]
        for split in ("val", "test")
        if summary.get(f"{split}_ece") is not None
    ]
    if not rows:
        return '<p class="muted">no calibration (a run from before temperature scaling)</p>'
    bins = (report.get("calibration") or {}).get("bins", 15)
    note = (
        f'<p class="muted">Temperature {summary["temperature"]:.4g}, fitted on the validation split (NLL, LBFGS); '
        f"predict, eval and export divide the logits by it. ECE: top-1 expected calibration error over {bins} "
        "equal-width confidence bins (val ECE after calibration is in-sample).</p>"
    )
    plots = figure(run_dir / "reliability_val.png", "validation split") + figure(
        run_dir / "reliability.png", "test split"
    )
    return f'{table(["split", "ECE", "ECE calibrated"], rows)}\n{note}\n<div class="row">{plots}</div>'


def _mistakes_section(report: dict[str, Any], run_dir: Path, no_plots: str) -> str:
    """The most confused class pairs (counts, example paths) and the top losses of the test split."""
    pairs = [
        [p["true"], p["predicted"], p["count"], " · ".join(p["examples"])] for p in report.get("confused_pairs", [])
    ]
    listed = table(["true class", "predicted as", "images", "examples"], pairs, text_columns=2) if pairs else ""
    tta = report.get("tta")
    augmented = (
        f"<p>test-time augmentation ({esc(tta['mode'])}): accuracy {tta['acc']:.4f}, "
        f"without {tta['acc_without']:.4f}</p>"
        if tta
        else ""
    )
    grids = figure(run_dir / "confused.png", "most confused pairs, a row of examples each") + figure(
        run_dir / "top_losses.png", "top losses: given label, prediction (probability), loss"
    )
    listed = listed or '<p class="muted">no class confused with another</p>'
    return f"{augmented}{listed}\n{grids or no_plots}"


def _data_section(summary: dict[str, Any]) -> str:
    """What the run read: dataset, root and layout, split sizes, unreadable files skipped, images per class."""
    data, sizes = summary.get("data") or {}, summary.get("split_sizes") or {}
    facts = [["dataset", data.get("dataset")], ["root", data.get("root")], ["layout", data.get("layout")]]
    facts.append(["split sizes", " · ".join(f"{name} {n:,}" for name, n in sizes.items())])
    facts = [[key, value] for key, value in facts if value]
    bad, shown = summary.get("bad_images", 0), data.get("unreadable_files", [])
    skipped = f"<p>{bad:,} unreadable file{'s' * (bad != 1)} skipped</p>" if bad else ""
    if bad:
        items = "".join(f"<li>{esc(path)}</li>" for path in shown)
        more = (
            f'<p class="muted">and {bad - len(shown):,} more (listed as the run started)</p>'
            if bad > len(shown)
            else ""
        )
        skipped += f"<ul>{items}</ul>{more}"
    counts = data.get("class_counts") or {}
    per_class = ""
    if counts:
        splits = list(counts)
        classes = list(counts[splits[0]])
        rows = [[cls, *(counts[name][cls] for name in splits)] for cls in classes]
        per_class = "<h3>Images per class</h3>" + table(["class", *splits], rows)
    return f"{table(['', 'value'], facts, text_columns=2)}\n{skipped}\n{per_class}"


def _audit_section(run_dir: Path, summary: dict[str, Any]) -> str:
    """The run's duplicate groups and leaks (``audit.json``), leaks first; ``vitkit audit`` does the rest."""
    path = run_dir / "audit.json"
    if "audit" not in summary or not path.is_file():
        return '<p class="muted">no audit (not a folder, or its images were streamed, not cached)</p>'
    audit = json.loads(path.read_text())
    groups, cfg = audit["duplicates"], audit["settings"]
    note = leak_note(summary)
    lines = f'<p><strong style="color:#cf222e">{esc(note)}</strong></p>' if note else "<p>no leaks</p>"
    lines += (
        f"<p>{len(groups)} duplicate group{'s' * (len(groups) != 1)} (exact: {cfg['exact']}; near: pHash within "
        f"{cfg['near_threshold']} of 64 bits, thumbnails correlated at least {cfg['near_correlation']:g}). "
        "<code>vitkit audit RUN</code> adds likely label errors, sizes and colour modes.</p>"
    )
    rows = [
        [
            g["kind"],
            "LEAK" if g["leak"] else "",
            ", ".join(f"{p} ({s})" for p, s in zip(g["paths"], g["splits"], strict=True)),
        ]
        for g in groups[:20]
    ]
    return lines + (table(["kind", "leak", "paths (split)"], rows, text_columns=3) if rows else "")


def write_run_html(run_dir: Path, summary: dict[str, Any]) -> Path:
    """``report.html`` in a run directory: summary, curves, confusion matrix, per-class table, mistakes."""
    run_dir = Path(run_dir)
    facts = [[key, _num(summary[key])] for key in SUMMARY_KEYS if summary.get(key) is not None]
    if leak_note(summary):  # beside the test accuracy it flatters
        facts = [[key, f"{value}  {leak_note(summary)}" if key == "test_acc" else value] for key, value in facts]
    report_path = run_dir / "report_test.json"
    per_class, report = "", {}
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        classes = [
            [r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
            for r in report["per_class"]
        ]
        macro = report.get("macro")
        if macro:  # the unweighted mean over classes, as sklearn's average="macro"
            support = sum(r["support"] for r in report["per_class"])
            classes.append(["macro avg", *(f"{macro[k]:.3f}" for k in ("precision", "recall", "f1")), support])
        per_class = table(["class", "precision", "recall", "F1", "support"], classes)
    curves = figure(run_dir / "loss.png", "loss") + figure(run_dir / "accuracy.png", "accuracy")
    curves += figure(run_dir / "lr.png", "learning rate")
    no_plots = '<p class="muted">no plots (output.plots = false)</p>'
    body = f"""<h1>vitkit run: {esc(summary.get("name", run_dir.name))}</h1>
<p class="muted">{esc(run_dir)}</p>
<h2>Summary</h2>
{table(["", "value"], facts, text_columns=2)}
<h2>Data</h2>
{_data_section(summary)}
<h2>Data audit</h2>
{_audit_section(run_dir, summary)}
<h2>Curves</h2>
<div class="row">{curves or no_plots}</div>
<h2>Test split: confusion matrix</h2>
{figure(run_dir / "confusion.png", "confusion matrix (rows: true class)") or no_plots}
<h2>Test split: per class</h2>
{per_class or '<p class="muted">no per-class report</p>'}
<h2>Test split: the mistakes that matter</h2>
{_mistakes_section(report, run_dir, no_plots)}
<h2>Calibration</h2>
{_calibration_section(summary, report, run_dir)}
<h2>Misclassified examples</h2>
{figure(run_dir / "misclassified.png", "misclassified test images, most confident first") or no_plots}
{figure(run_dir / "predictions.png", "a sample of test predictions")}
"""
    path = run_dir / "report.html"
    path.write_text(page(f"vitkit run: {summary.get('name', run_dir.name)}", body))
    return path
