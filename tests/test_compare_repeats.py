"""``vitkit compare --seeds/--folds/--jobs``: matched repeats, mean ± sd and intervals, verdicts,
banded curves, parallel runs, and the HTML pages (rendered in headless Chromium where installed)."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vitkit import stats
from vitkit.commands.compare.report import mean_band

from .conftest import TINY_DIGITS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ONE_EPOCH = TINY_DIGITS.replace("epochs = 2", "epochs = 1")


def _compare(tmp: Path, *extra: str) -> Path:
    from vitkit.cli import main

    recipe = tmp / "tiny.toml"
    recipe.write_text(ONE_EPOCH)
    out = tmp / "report"
    args = ["compare", str(recipe), "--set", f'output.dir="{tmp}"', "--out", str(out), *extra]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Two attentions x 2 seeds, trained 2 runs at a time in separate processes."""
    tmp = tmp_path_factory.mktemp("seeds")
    return _compare(tmp, "--vary", "model.attention=softmax,cosine", "--seeds", "2", "--jobs", "2")


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """One recipe, 2-fold cross-validation, trained in this process."""
    return _compare(tmp_path_factory.mktemp("folds"), "--folds", "2")


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "compare.csv").read_text().splitlines()))


def _summaries(row: dict[str, str]) -> list[dict]:
    return [json.loads((Path(d) / "summary.json").read_text()) for d in row["run_dir"].split(";")]


@pytest.mark.slow
def test_seeds_are_matched_and_summarised(seeded):
    rows = _rows(seeded)
    assert {r["name"] for r in rows} == {"attention=softmax", "attention=cosine"}
    runs = {}
    for row in rows:
        summaries = _summaries(row)
        assert [s["seed"] for s in summaries] == [0, 1]  # the same seeds for every variant
        assert [Path(s["run_dir"]).parent.name for s in summaries] == [
            f"{row['name']}-seed0",
            f"{row['name']}-seed1",
        ]
        for metric, split in (("test_acc", "test"), ("best_val_acc", "val")):
            values = [s[metric] for s in summaries]
            expected = stats.describe_accuracy(values, [s["split_sizes"][split] for s in summaries])
            assert int(row["repeats"]) == 2
            assert float(row[metric]) == pytest.approx(expected.mean, abs=1e-12)
            assert float(row[f"{metric}_sd"]) == pytest.approx(expected.sd, abs=1e-12)
            assert float(row[f"{metric}_low"]) == pytest.approx(expected.low, abs=1e-12)
            assert float(row[f"{metric}_high"]) == pytest.approx(expected.high, abs=1e-12)
            assert 0.0 <= expected.low <= expected.high <= 1.0
        runs[row["name"]] = [s["best_val_acc"] for s in summaries]
        assert (Path(summaries[0]["run_dir"]) / "report.html").is_file()
    vals = [float(r["best_val_acc"]) for r in rows]
    assert vals == sorted(vals, reverse=True)  # ranked on validation; the paired test is on it too
    best, other = rows[0], rows[1]
    line = stats.verdict(best["name"], other["name"], runs[best["name"]], runs[other["name"]])
    tests = f"test acc {float(best['test_acc']):.4f} vs {float(other['test_acc']):.4f}"
    line = f"best_val_acc: {line}; {tests} (not ranked on)"
    report = json.loads((seeded / "compare.json").read_text())
    assert report["verdicts"] == [line] and report["seeds"] == 2 and report["jobs"] == 2
    assert line in (seeded / "compare_verdicts.txt").read_text()
    assert ("beats" in line) or ("within noise" in line) or ("cannot tell" in line)
    for name in ("attention=softmax-seed0", "attention=cosine-seed1"):
        assert "vitkit run" in (seeded / f"{name}.log").read_text()  # each run's own console output


@pytest.mark.slow
def test_parallel_report_has_the_sequential_shape(seeded, folded):
    parallel = json.loads((seeded / "compare.json").read_text())
    sequential = json.loads((folded / "compare.json").read_text())
    assert set(parallel) == set(sequential)
    assert set(parallel["rows"][0]) == set(sequential["rows"][0])
    assert _rows(seeded)[0].keys() == _rows(folded)[0].keys()


def test_folds_cross_validate(folded):
    (row,) = _rows(folded)
    summaries = _summaries(row)
    assert int(row["repeats"]) == 2
    folds = [(Path(s["run_dir"]) / "recipe.toml").read_text() for s in summaries]
    assert 'fold = "1/2"' in folds[0] and 'fold = "2/2"' in folds[1]
    tests = [json.loads((Path(s["run_dir"]) / "report_test.json").read_text())["count"] for s in summaries]
    assert tests == [359, 359]  # the same untouched test split (20% of 1,797 digits) scored per fold
    assert float(row["test_acc"]) == pytest.approx(sum(s["test_acc"] for s in summaries) / 2)
    report = json.loads((folded / "compare.json").read_text())
    assert report["folds"] == 2 and report["verdicts"] == [] and report["verdict"].startswith("only one variant")


def test_mean_band_over_runs_of_unequal_length():
    runs = [
        [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.7}],
        [{"epoch": 1, "val_acc": 0.3}, {"epoch": 2, "val_acc": 0.9}, {"epoch": 3, "val_acc": 0.95}],
    ]
    epochs, mean, low, high = mean_band(runs, "val_acc")
    assert epochs == [1, 2, 3]
    assert mean == pytest.approx([0.4, 0.8, 0.95])
    assert (low, high) == ([0.3, 0.7, 0.95], [0.5, 0.9, 0.95])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0"], "--seeds 0"),
        (["--folds", "1"], "--folds 1"),
        (["--jobs", "0"], "--jobs 0"),
        (["--seeds", "2", "--folds", "2"], "not allowed with argument"),
        (["--vary", "seed=0,1", "--seeds", "2"], "--seeds/--folds repeat it already"),
    ],
)
def test_repeat_user_errors(cli, write_recipe, tmp_path, args, message):
    code, _, err = cli("compare", write_recipe(ONE_EPOCH), "--set", f'output.dir="{tmp_path}"', *args)
    assert code == 2 and message in err and "Traceback" not in err


# ------------------------------------------------------------------------- pages in a browser


def render(page: Path, tmp_path: Path) -> str:
    """The DOM Chromium builds from ``page`` after load, with ``data-decoded``: each image's decoded width."""
    probe = tmp_path / f"probe-{page.name}"
    script = (
        '<script>addEventListener("load", () => { document.body.dataset.decoded = '
        '[...document.images].map(i => i.complete ? i.naturalWidth : 0).join(","); });</script>'
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def _decoded(dom: str) -> list[int]:
    import re

    match = re.search(r'data-decoded="([\d,]*)"', dom)
    assert match, "the page's load event never ran"
    return [int(w) for w in match[1].split(",") if w]


def _self_contained(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    assert "<link" not in text and "<script" not in text


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_compare_html_renders_in_chromium(folded, tmp_path):
    page = folded / "compare.html"
    _self_contained(page)
    dom = render(page, tmp_path)
    report = json.loads((folded / "compare.json").read_text())
    assert report["verdict"].replace("'", "&#x27;") in dom or report["verdict"] in dom
    assert "<table>" in dom and "test acc" in dom and ">tiny<" in dom
    assert "fold=1/2" in dom and "fold=2/2" in dom  # every run listed
    widths = _decoded(dom)
    assert len(widths) == 2 and all(w > 100 for w in widths)  # both banded plots decoded


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_run_report_html_renders_in_chromium(folded, tmp_path):
    run_dir = Path(_rows(folded)[0]["run_dir"].split(";")[0])
    page = run_dir / "report.html"
    _self_contained(page)
    dom = render(page, tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"{summary['test_acc']:.4f}" in dom and "Confusion matrix" in dom.title() or "confusion matrix" in dom
    per_class = dom.split("per class")[1].split("</table>")[0]
    assert per_class.count("<tr>") == 11  # header + the ten digits
    widths = _decoded(dom)
    # loss, accuracy, lr, confusion, confused pairs, top losses, reliability (val, test), misclassified,
    # predictions: all embedded and decoded
    assert len(widths) == 10 and all(w > 100 for w in widths)


@pytest.mark.slow
def test_a_failing_parallel_run_is_one_clear_error(cli, write_recipe, tmp_path):
    recipe = write_recipe(ONE_EPOCH)
    args = ["--vary", "model.attention=softmx,cosinn", "--jobs", "2", "--no-plugins"]
    code, _, err = cli("compare", recipe, "--set", f'output.dir="{tmp_path}"', "--out", tmp_path / "out", *args)
    assert code == 2 and "Traceback" not in err
    assert "compare variant 'attention=softmx'" in err and "did you mean 'softmax'" in err
    assert "compare variant 'attention=cosinn'" in err and "attention=cosinn.log" in err


def test_parallel_runs_get_the_same_keys_as_in_process_ones(write_recipe, tmp_path):
    from vitkit.commands.compare.jobs import run_command
    from vitkit.commands.compare.plan import add_repeats, plan, run_overrides
    from vitkit.engine.threads import threads_per_job

    (variant,) = plan([str(write_recipe(ONE_EPOCH))], ["model.attention=cosine"])
    add_repeats([variant], None, 3, first_seed=0)
    repeat = variant.repeats[1]
    command = run_command(variant, repeat, ["train.epochs=2"], tmp_path, ("my_plugin.py",), entry_points=False)
    keys = run_overrides(variant, repeat, ["train.epochs=2"], tmp_path)
    assert keys == [
        "train.epochs=2",
        "model.attention=cosine",
        'data.fold="2/3"',
        f'output.dir="{tmp_path.as_posix()}"',
        'name="attention=cosine-fold2of3"',
    ]
    assert command[2:5] == ["vitkit", "run", str(variant.source)]
    assert command[5:-3] == [arg for key in keys for arg in ("--set", key)]
    assert command[-3:] == ["--plugin", "my_plugin.py", "--no-plugins"]
    assert threads_per_job(1) >= threads_per_job(2) >= 1 and threads_per_job(2, asked=3) == 3
