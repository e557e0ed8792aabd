"""What a run uses and what it saw, read as a user reads it: CPU threads (``--threads``, ``train.threads``,
``compare --jobs``, a busy machine named), and report.html / compare.html (issue 23, snags 6 and 11)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT
from tests.photos import folder_recipe, tiny_folder

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _vitkit(*args: str | Path, cwd: Path, load: float = 0.0) -> subprocess.CompletedProcess:
    """``vitkit ARGS`` in a fresh process; ``load``: the 1-minute load average it sees (``VITKIT_TEST_LOADAVG``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=str(ROOT), VITKIT_TEST_LOADAVG=str(load), COLUMNS="300")
    command = [sys.executable, "-m", "vitkit", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(folder, its corrupt JPEG, a tiny recipe on it): 3 classes x 10 small JPEGs, one of them truncated."""
    tmp = tmp_path_factory.mktemp("photos")
    root = tiny_folder(tmp / "photos")
    corrupt = sorted(root.rglob("*.jpg"))[3]
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])
    return root, corrupt, folder_recipe(tmp, root)


@pytest.fixture(scope="module")
def photo_run(photos) -> tuple[subprocess.CompletedProcess, Path]:
    """``vitkit run recipe.toml --threads 1`` on a quiet machine: (the process, its run directory)."""
    recipe = photos[2]
    result = _vitkit("run", recipe, "--threads", "1", cwd=recipe.parent)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (recipe.parent / "runs" / "photos").iterdir()
    return result, run_dir


@pytest.fixture(scope="module")
def compared(tmp_path_factory, photos) -> Path:
    """``vitkit compare recipe.toml --vary model.depth=1,2 --jobs 2``: the report folder."""
    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "report"
    args = ["--vary", "model.depth=1,2", "--jobs", "2", "--out", out]
    args += ["--set", f'output.dir="{tmp.as_posix()}"']
    result = _vitkit("compare", photos[2], *args, cwd=tmp)
    assert result.returncode == 0, result.stderr + result.stdout
    return out


# ---------------------------------------------------------------------------------------------- 6


def test_i23_6_run_threads_sets_and_records_the_thread_count(photo_run):
    result, run_dir = photo_run
    assert "on cpu (fp32, 1 CPU thread)" in result.stdout, result.stdout
    assert json.loads((run_dir / "summary.json").read_text())["threads"] == 1
    assert "machine is busy" not in result.stdout  # load 0: no note


def test_i23_6_train_threads_is_validated(photos, tmp_path):
    for args in (["--set", "train.threads=-1"], ["--threads", "-1"], ["--set", 'train.threads="four"']):
        result = _vitkit("run", photos[2], *args, "--dry-run", cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"{photos[2]}: train.threads: expected " in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_i23_6_a_busy_machine_is_named_with_how_to_limit_threads(photos, tmp_path):
    recipe = folder_recipe(tmp_path, photos[0])
    result = _vitkit("run", recipe, cwd=tmp_path, load=4.0 * CORES)
    assert result.returncode == 0, result.stderr
    (note,) = [line for line in result.stdout.splitlines() if "machine is busy" in line]
    assert f"note: this machine is busy (load {4.0 * CORES:.1f} on {CORES} cores)" in note
    assert "limit threads with --threads N (train.threads)" in note
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["threads"] == CORES  # torch's default: every core


def test_i23_6_compare_jobs_gives_each_run_its_share_of_cores(compared):
    rows = json.loads((compared / "compare.json").read_text())["rows"]
    summaries = [json.loads((Path(run["run_dir"]) / "summary.json").read_text()) for row in rows for run in row["runs"]]
    assert len(summaries) == 2
    assert [s["threads"] for s in summaries] == [max(1, CORES // 2)] * 2


# ---------------------------------------------------------------------------------------------- 11


def _text(page: str) -> str:
    """The page as a reader sees it: tags gone, entities decoded, whitespace collapsed."""
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_i23_11_report_html_says_what_the_run_saw(photos, photo_run):
    from sklearn.metrics import f1_score, precision_score, recall_score

    root, corrupt, _ = photos
    _, run_dir = photo_run
    page = _text((run_dir / "report.html").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    sizes = {name: len(split[name]) for name in ("train", "val", "test")}
    assert sum(sizes.values()) == 29  # 30 images, one unreadable
    assert f"root {root}" in page and "layout flat" in page
    assert f"split sizes train {sizes['train']} · val {sizes['val']} · test {sizes['test']}" in page
    assert f"1 unreadable file skipped {corrupt}" in page
    for cls in split["classes"]:  # images per class: train, val, test
        counts = [sum(label == cls for _, label in split[name]) for name in ("train", "val", "test")]
        assert f"{cls} {counts[0]} {counts[1]} {counts[2]}" in page, cls
    # macro precision/recall/F1 of the test predictions (the confusion matrix counts them), as sklearn has them
    report = json.loads((run_dir / "report_test.json").read_text())
    true = [t for t, row in enumerate(report["confusion"]) for p, n in enumerate(row) for _ in range(n)]
    predicted = [p for row in report["confusion"] for p, n in enumerate(row) for _ in range(n)]
    labels = list(range(len(split["classes"])))
    expected = {
        "precision": precision_score(true, predicted, labels=labels, average="macro", zero_division=0),
        "recall": recall_score(true, predicted, labels=labels, average="macro", zero_division=0),
        "f1": f1_score(true, predicted, labels=labels, average="macro", zero_division=0),
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    for key, value in expected.items():
        assert report["macro"][key] == pytest.approx(value) and summary[f"test_macro_{key}"] == pytest.approx(value)
        assert f"test_macro_{key} {value:.4f}" in page
    macro = " ".join(f"{expected[k]:.3f}" for k in ("precision", "recall", "f1"))
    assert f"macro avg {macro} {sizes['test']}" in page
    assert f"test_acc {summary['test_acc']:.4f}" in page


def test_i23_11_compare_html_links_each_variant_to_its_run_report(compared):
    page = (compared / "compare.html").read_text()
    links = [href for href in re.findall(r'href="([^"]+)"', page) if not href.startswith("data:")]
    rows = json.loads((compared / "compare.json").read_text())["rows"]
    runs = {Path(run["run_dir"]).resolve() for row in rows for run in row["runs"]}
    assert len(runs) == 2
    targets = [(compared / unquote(href)).resolve() for href in links]  # as a browser resolves them
    assert all(not Path(href).is_absolute() for href in links)  # relative: the folder can move as a whole
    assert all(t.name == "report.html" and t.is_file() for t in targets), links
    assert {t.parent for t in targets} == runs  # every variant's run, from the Variants and Every-run tables
