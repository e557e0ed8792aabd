"""What an audit writes: ``audit.json``, ``audit.html`` (self-contained, thumbnails embedded), the console
summary, and the fix plan (a ``path,action,label,reason`` CSV that ``data.exclude`` applies)."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

SHOWN_GROUPS = 40  # duplicate groups with thumbnails in audit.html (all are in audit.json)
SHOWN_ISSUES = 60  # label issues with thumbnails in audit.html
THUMB = 96


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def fix_plan_rows(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per file to change: every copy after a group's first (a train copy when there is one) is
    dropped; every likely label error is relabelled to the suggested class. A file in both is dropped."""
    rows: dict[str, dict[str, str]] = {}
    for group in result["duplicates"]:
        reason = f"{group['kind']} copy of {group['paths'][0]}" + (" (leak)" if group["leak"] else "")
        for path in group["paths"][1:]:
            rows[path] = {"path": path, "action": "drop", "label": "", "reason": reason}
    for issue in result["label_issues"]:
        reason = f"labelled {issue['given']}, looks like {issue['suggested']} (score {issue['score']:.3f})"
        rows.setdefault(issue["path"], {"path": issue["path"], "action": "relabel", "label": issue["suggested"],
                                        "reason": reason})  # fmt: skip
    return list(rows.values())


def write_fix_plan(result: dict[str, Any], path: Path) -> Path:
    """The fix plan CSV; edit it (delete rows, change ``action`` to ``keep``), then set ``data.exclude``."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=["path", "action", "label", "reason"])
    writer.writeheader()
    writer.writerows(fix_plan_rows(result))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.getvalue())
    return path


def _thumbnail(path: Path) -> str:
    """An ``<img>`` of the file as a small embedded JPEG (a grey box if it cannot be read)."""
    from vitkit.data.imageio import open_image

    try:
        img = open_image(path, "RGB", draft=THUMB)
    except Exception:  # noqa: BLE001 (a file gone since: the page still renders)
        return '<span class="muted">(unreadable)</span>'
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="" style="height:{THUMB}px">'


def _tile(root: Path, rel: str, caption: str) -> str:
    from vitkit.evaluation.html_report import esc

    return f"<figure>{_thumbnail(root / rel)}<figcaption>{esc(caption)}</figcaption></figure>"


def write_html(result: dict[str, Any], path: Path) -> Path:
    """``audit.html``: the summary, classes, image facts, duplicate groups and label issues with thumbnails."""
    from vitkit.evaluation.html_report import esc, page, table

    root = Path(result["root"])
    counts = result["classes"]
    rows = [[cls, *(row[s] for s in ("train", "val", "test", "total"))] for cls, row in counts.items()]
    images = result.get("images") or {}
    facts = [[line] for line in summary_lines(result)]
    body = [f"<h1>vitkit audit: {esc(result['root'])}</h1>", "<h2>Summary</h2>", table(["finding"], facts)]
    body += ["<h2>Images per class</h2>", table(["class", "train", "val", "test", "total"], rows)]
    if images:
        sizes = [
            [key, *(images[key][k] for k in ("min", "median", "max"))] for key in ("width", "height", "aspect_ratio")
        ]
        body += ["<h2>Image sizes</h2>", table(["", "min", "median", "max"], sizes)]
    groups = result["duplicates"]
    body.append(f"<h2>Duplicates ({len(groups)} groups)</h2>")
    body.append(
        f'<p class="muted">exact: same decoded pixels; near: perceptual hash within '
        f"{result['settings']['near_threshold']} of 64 bits. Leaks (a group in train and val/test) first.</p>"
    )
    for n, group in enumerate(groups[:SHOWN_GROUPS], start=1):
        flag = ' <strong style="color:#cf222e">LEAK</strong>' if group["leak"] else ""
        tiles = "".join(
            _tile(root, p, f"{s} · {label} · {p}")
            for p, s, label in zip(group["paths"], group["splits"], group["labels"], strict=True)
        )
        body.append(f"<h3>group {n}: {group['kind']}{flag}</h3><div>{tiles}</div>")
    if len(groups) > SHOWN_GROUPS:
        body.append(f'<p class="muted">and {len(groups) - SHOWN_GROUPS} more groups in audit.json</p>')
    issues, check = result["label_issues"], result["label_check"]
    body.append(f"<h2>Likely label errors ({len(issues)})</h2>")
    body.append(f'<p class="muted">{esc(check.get("how") or check.get("skipped") or "")}</p>')
    tiles = "".join(
        _tile(root, i["path"], f"given {i['given']} → {i['suggested']} ({i['score']:.3f}) · {i['path']}")
        for i in issues[:SHOWN_ISSUES]
    )
    body.append(f"<div>{tiles}</div>")
    path.write_text(page(f"vitkit audit: {result['root']}", "\n".join(body)))
    return path


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The findings in a few plain lines (console, audit.html)."""
    sizes = result["split_sizes"]
    total = sum(sizes.values())
    bal = result["balance"]
    lines = [
        f"{total:,} images ({' · '.join(f'{k} {v:,}' for k, v in sizes.items())}), layout {result['layout']}, "
        f"{len(result['classes'])} classes",
        f"class balance: largest/smallest {bal['ratio']:g} ({bal['largest']} {bal['largest_count']:,}, "
        f"{bal['smallest']} {bal['smallest_count']:,})",
    ]
    groups = result["duplicates"]
    exact = sum(g["kind"] == "exact" for g in groups)
    threshold = result["settings"]["near_threshold"]
    lines.append(
        f"duplicates: {len(groups)} groups ({exact} exact, {len(groups) - exact} near: pHash <= {threshold}/64 bits), "
        f"{sum(len(g['paths']) for g in groups):,} images"
    )
    leaks = result["leaks"]
    if leaks["groups"]:
        lines.append(leak_line(leaks))
    check = result["label_check"]
    if "skipped" in check:
        lines.append(f"label errors: not checked ({check['skipped']})")
    else:
        lines.append(f"likely label errors: {len(result['label_issues']):,} ({check['how']})")
    images = result.get("images")
    if images:
        modes, orient = images["modes"], images["orientation"]
        lines.append(
            f"sizes: width {images['width']['min']:g}-{images['width']['max']:g}, height {images['height']['min']:g}-"
            f"{images['height']['max']:g}; {orient['portrait']} portrait, {orient['square']} square, "
            f"{orient['landscape']} landscape; {modes['grey']} grey, {modes['cmyk']} CMYK, {modes['alpha']} with alpha"
        )
    lines.append(f"unreadable files skipped: {result['unreadable']}")
    return lines


def leak_line(leaks: dict[str, int]) -> str:
    """The one-line leak warning (console, report.html, beside a test accuracy)."""
    return (
        f"LEAK: {leaks['groups']} duplicate group{'s' * (leaks['groups'] != 1)} span train and val/test: "
        f"{leaks['test']} test and {leaks['val']} val images have a copy in train (their accuracy flatters)"
    )


def print_summary(result: dict[str, Any], written: list[Path]) -> None:
    """One screen: the findings, the first groups and issues, the files written."""
    from rich.table import Table

    from vitkit.engine.console import console

    console.print(f"[bold]vitkit audit[/] {result['root']}")
    for line in summary_lines(result):
        leak = line.startswith("LEAK")
        console.print(line if leak else f"  {line}", style="bold red" if leak else None, markup=False, highlight=False)
    if result["duplicates"]:
        table = Table(title="duplicate groups (first 5)", title_justify="left")
        for col in ("kind", "leak", "paths (split)"):
            table.add_column(col)
        for group in result["duplicates"][:5]:
            paths = ", ".join(f"{p} ({s})" for p, s in zip(group["paths"], group["splits"], strict=True))
            table.add_row(group["kind"], "LEAK" if group["leak"] else "", paths)
        console.print(table)
    if result["label_issues"]:
        table = Table(title="likely label errors (first 5)", title_justify="left")
        for col in ("path", "given", "suggested", "score"):
            table.add_column(col)
        for issue in result["label_issues"][:5]:
            table.add_row(issue["path"], issue["given"], issue["suggested"], f"{issue['score']:.3f}")
        console.print(table)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
