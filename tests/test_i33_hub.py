"""Issue 33 items 4 and 10: the hf export means what vitkit does (a consumer of timm Hub folders that follows
config.json gets vitkit's top-1) and its model card says what the run's summary and audit say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vitkit.cli import main

from .photos import folder_recipe
from .test_multilabel import multilabel_folder

# ------------------------------------------------------------------------------------------- item 10


@pytest.fixture(scope="module")
def leaky_multilabel_hf(tmp_path_factory) -> tuple[Path, Path]:
    """A 1-epoch multi-label folder run whose data has copies of some images (the run's audit finds test
    images with a copy in train), exported as an hf folder: (run dir, folder)."""
    tmp = tmp_path_factory.mktemp("ml")
    root = multilabel_folder(tmp / "photos", images=36)
    rows = (root / "labels.csv").read_text().splitlines()
    for row in rows[1:25]:  # 24 copies under other names: some land in train beside their original in test
        path, labels = row.split(",")
        shutil.copy(root / path, root / path.replace(".png", "_copy.png"))
        rows.append(f"{path.replace('.png', '_copy.png')},{labels}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = folder_recipe(tmp, root, '[loss]\nname = "bce"\n')
    assert main(["run", str(recipe)]) == 0
    (run,) = (tmp / "runs" / "photos").iterdir()
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp / "hf")]) == 0
    return run, tmp / "hf"


def test_i33_10_multilabel_card_states_exact_match_map_and_thresholds(leaky_multilabel_hf):
    run, hf = leaky_multilabel_hf
    card = (hf / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    report = json.loads((run / "report_test.json").read_text())
    assert summary["multi_label"] is True
    assert f"{summary['test_exact_match']:.2%}" in card and f"{summary['test_map']:.4f}" in card
    assert "exact match" in card and "mAP" in card
    assert "accuracy **" not in card and "Test accuracy" not in card
    for row in report["per_class"]:  # every class's threshold, chosen on val
        assert f"| {row['class']} | {row['threshold']:.3f} |" in card, card
    assert "gets one of them" not in card and "every label whose probability reaches its threshold" in card


def test_i33_10_card_of_a_run_with_a_recorded_leak_gives_the_caveat(leaky_multilabel_hf):
    run, hf = leaky_multilabel_hf
    card = (hf / "README.md").read_text()
    leaks = json.loads((run / "summary.json").read_text())["audit"]["leaks"]
    assert leaks["test"] > 0, leaks  # the fixture's copies did leak
    assert "The test split was held out" not in card
    assert f"LEAK: {leaks['test']} test and {leaks['val']} val image" in card
