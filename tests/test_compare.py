"""``vitkit compare``: variants are trained, ranked and reported with numbers read from their runs."""

import csv
import json
from pathlib import Path

import pytest

import vitkit
from vitkit.commands.compare.command import collect
from vitkit.commands.compare.plan import Repeat, Variant, rank, split_values, verdicts

from .conftest import TINY_DIGITS


def _second_attention() -> str:
    """Another registered attention, or softmax with QK-norm when softmax is the only one."""
    others = [name for name in vitkit.ATTENTION.list() if name != "softmax"]
    return others[0] if others else '{name="softmax", qk_norm=true}'


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from vitkit.cli import main

    tmp = tmp_path_factory.mktemp("compare")
    recipe = tmp / "tiny.toml"
    recipe.write_text(TINY_DIGITS)
    out = tmp / "report"
    args = ["compare", str(recipe), "--vary", f"model.attention=softmax,{_second_attention()}"]
    args += [
        "--set",
        "train.epochs=1",
        "--set",
        f'output.dir="{tmp}"',
        "--out",
        str(out),
    ]
    assert main(args) == 0
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_report_files(compared):
    assert {p.name for p in compared.iterdir()} >= {
        "compare.csv",
        "compare.json",
        "compare_loss.png",
        "compare_accuracy.png",
    }
    for name in ("compare_loss.png", "compare_accuracy.png"):
        assert (compared / name).read_bytes()[:4] == b"\x89PNG"
    rows = _csv_rows(compared / "compare.csv")
    assert [r["name"] for r in rows] != [] and len(rows) == 2
    assert {r["name"] for r in rows} == {"attention=softmax", f"attention={_second_attention()}"}


def test_numbers_are_read_from_the_runs(compared):
    rows = _csv_rows(compared / "compare.csv")
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent.parent == compared  # the variants' runs live inside the report folder
        summary = json.loads((run_dir / "summary.json").read_text())
        profile = json.loads((run_dir / "profile.json").read_text())
        for key in ("test_acc", "best_val_acc", "train_img_per_s", "wall_time_s"):
            assert float(row[key]) == summary[key], key
        assert int(row["params"]) == summary["params"]
        assert float(row["gflops"]) == profile["gflops"] > 0
        assert float(row["infer_img_per_s"]) == profile["infer_img_per_s"] > 0
    accs = [float(r["best_val_acc"]) for r in rows]  # ranked on validation by default, test beside it
    assert accs == sorted(accs, reverse=True) and [r["rank"] for r in rows] == ["1", "2"]
    report = json.loads((compared / "compare.json").read_text())
    assert report["rank_by"] == "best_val_acc" and [r["best_val_acc"] for r in report["rows"]] == accs
    assert report["verdict"].startswith(f"best by best_val_acc: {rows[0]['name']}")


def test_finished_runs_are_compared_without_training(compared, cli, tmp_path):
    run_dirs = [row["run_dir"] for row in _csv_rows(compared / "compare.csv")]
    code, out, err = cli("compare", *run_dirs, "--rank-by", "params", "--out", tmp_path / "again")
    assert code == 0, err
    assert "ranked by params" in out and "vitkit run" not in out  # nothing trained
    again = {r["run_dir"]: r for r in _csv_rows(tmp_path / "again" / "compare.csv")}
    for row in _csv_rows(compared / "compare.csv"):
        assert again[row["run_dir"]]["test_acc"] == row["test_acc"]
        assert again[row["run_dir"]]["infer_img_per_s"] == row["infer_img_per_s"]  # profile.json reused


def test_compare_user_errors(cli, tmp_path, write_recipe):
    recipe = write_recipe(TINY_DIGITS)
    code, _, err = cli("compare", recipe, "--rank-by", "speed")
    assert code == 2 and "--rank-by 'speed'" in err
    code, _, err = cli("compare", recipe, "--vary", "model.attention")
    assert code == 2 and "--vary 'model.attention'" in err
    code, _, err = cli("compare", tmp_path)
    assert code == 2 and "not a finished run directory" in err
    code, _, err = cli("compare", recipe, "--vary", "model.attention=softmx", "--set", f'output.dir="{tmp_path}"')
    assert code == 2 and "variant 'attention=softmx'" in err and "did you mean 'softmax'" in err


def test_vary_values_split_outside_brackets():
    assert split_values('softmax, {name="softmax", qk_norm=true},[1, 2],"a,b"') == [
        "softmax",
        '{name="softmax", qk_norm=true}',
        "[1, 2]",
        '"a,b"',
    ]


def test_vary_axes_make_all_combinations(write_recipe, tmp_path):
    from vitkit.commands.compare.plan import plan

    first = write_recipe(TINY_DIGITS, "a.toml")
    variants = plan([str(first)], ["model.depth=1,2", "model.attention=softmax,{name='softmax', qk_norm=true}"])
    assert [v.label for v in variants] == [
        "depth=1, attention=softmax",
        "depth=1, attention={name='softmax', qk_norm=true}",
        "depth=2, attention=softmax",
        "depth=2, attention={name='softmax', qk_norm=true}",
    ]
    assert variants[3].overrides == ["model.depth=2", "model.attention={name='softmax', qk_norm=true}"]
    second = write_recipe(TINY_DIGITS, "b.toml")
    labels = [v.label for v in plan([str(first), str(second)], ["seed=0,1"])]
    assert labels == ["a [seed=0]", "a [seed=1]", "b [seed=0]", "b [seed=1]"]


def _finished_run(run_dir: Path, val: float, test: float, seed: int = 0, images: int = 400) -> Path:
    """A finished run's files as the trainer and ``profile_run`` write them, with the given accuracies."""
    run_dir.mkdir(parents=True)
    summary = {
        "model": "vit_nano_patch4_16",
        "params": 100_000,
        "train_img_per_s": 1000.0,
        "best_val_acc": val,
        "test_acc": test,
        "wall_time_s": 10.0,
        "epochs_run": 2,
        "device": "cpu",
        "seed": seed,
        "split_sizes": {"train": 1000, "val": images, "test": images},
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "profile.json").write_text(json.dumps({"gflops": 0.01, "gmacs": 0.005, "infer_img_per_s": 5000.0}))
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc", f"1,1.0,0.8,1.1,{val - 0.05}", f"2,0.5,0.9,0.6,{val}"]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run_dir


def test_i22_6_compare_ranks_on_val_not_test(cli, tmp_path):
    """The variant with the better validation accuracy wins even though its test accuracy is worse;
    test is shown beside it, and ranking on test is refused."""
    better_val = _finished_run(tmp_path / "better-val" / "run", val=0.99, test=0.90)
    better_test = _finished_run(tmp_path / "better-test" / "run", val=0.95, test=0.97)
    code, out, err = cli("compare", better_test, better_val, "--out", tmp_path / "report")
    assert code == 0, err
    rows = _csv_rows(tmp_path / "report" / "compare.csv")
    assert [(r["rank"], r["name"], r["test_acc"]) for r in rows] == [
        ("1", "better-val", "0.9"),
        ("2", "better-test", "0.97"),
    ]
    report = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert report["rank_by"] == "best_val_acc" and [r["name"] for r in report["rows"]] == ["better-val", "better-test"]
    assert report["verdict"].startswith("best by best_val_acc: better-val (0.99; test acc 0.9000), +4.0 points over")
    assert report["verdicts"] == [
        "best_val_acc: better-val leads better-test by 4.0 points on one run each: no test possible; run more seeds; "
        "test acc 0.9000 vs 0.9700 (not ranked on)"
    ]
    assert "ranked by best_val_acc" in out and "test acc (not ranked on)" in out
    page = (tmp_path / "report" / "compare.html").read_text()
    assert "<h1>vitkit compare: ranked by best_val_acc</h1>" in page
    assert '<tr class="best"><td class="text">1</td><td class="text">better-val</td>' in page
    code, _, err = cli("compare", better_test, better_val, "--rank-by", "test_acc", "--out", tmp_path / "again")
    assert code == 2 and "--rank-by test_acc" in err and "selection on test" in err
    assert not (tmp_path / "again").exists()


def _seeded_variant(tmp_path: Path, name: str, accuracies: list[tuple[float, float]]) -> Variant:
    """A variant whose repeats are finished fake runs with these (val, test) accuracies at seeds 0, 1, ..."""
    repeats = [
        Repeat(f"seed={seed}", run_dir=_finished_run(tmp_path / f"{name}-seed{seed}" / "run", val, test, seed))
        for seed, (val, test) in enumerate(accuracies)
    ]
    return Variant(name, tmp_path / "recipe.toml", [], repeats=repeats)


def test_i22_6_accuracy_intervals_stay_inside_0_1(tmp_path):
    """Two seeds at 0.80 and 0.95: the Student-t interval of the raw mean was [-0.08, 1.83]."""
    from vitkit import stats

    row = collect(_seeded_variant(tmp_path, "two", [(0.85, 0.80), (1.0, 0.95)]))
    for metric in ("test_acc", "best_val_acc"):
        assert 0.0 <= row[f"{metric}_low"] < row[metric] < row[f"{metric}_high"] <= 1.0, metric
    assert row["test_acc"] == pytest.approx(0.875) and row["best_val_acc"] == pytest.approx(0.925)
    expected = stats.describe_accuracy([0.80, 0.95], [400, 400])  # t on the logit scale
    assert (row["test_acc_low"], row["test_acc_high"]) == (expected.low, expected.high)


def test_i22_6_equal_paired_differences_cannot_tell(tmp_path):
    """Three seeds, each better by exactly one of 400 validation images: no spread, so no test (not p < 0.001)."""
    ahead = _seeded_variant(tmp_path, "ahead", [(391 / 400, 0.95), (381 / 400, 0.94), (385 / 400, 0.96)])
    behind = _seeded_variant(tmp_path, "behind", [(390 / 400, 0.96), (380 / 400, 0.95), (384 / 400, 0.97)])
    rows = rank([collect(behind), collect(ahead)], "best_val_acc")
    (line,) = verdicts(rows, "best_val_acc")
    assert line == (
        "best_val_acc: ahead vs behind: cannot tell; the 3 paired differences are all equal (+0.25 points), so the "
        "test has no spread to judge them by; run more seeds; test acc 0.9500 vs 0.9600 (not ranked on)"
    )
