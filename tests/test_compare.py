"""``vitkit compare``: variants are trained, ranked and reported with numbers read from their runs."""

import csv
import json
from pathlib import Path

import pytest

import vitkit
from vitkit.apps.compare_plan import split_values

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
    accs = [float(r["test_acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True) and [r["rank"] for r in rows] == ["1", "2"]
    report = json.loads((compared / "compare.json").read_text())
    assert report["rank_by"] == "test_acc" and [r["test_acc"] for r in report["rows"]] == accs
    assert report["verdict"].startswith(f"best by test_acc: {rows[0]['name']}")


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
    from vitkit.apps.compare_plan import plan

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
