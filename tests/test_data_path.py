"""Issue 22: one way to read a recipe's data. Each test is named for the item it pins down and failed
before the fix: a labels.csv wins over sub-folders, vitkit's runs are never read as images, duplicate
CSV rows are one file, a k-fold run is re-scored on its own fold, an hf-hub model's preprocessing comes
from its config, and ``--lr auto`` loads the data once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitkit.commands.run.folder import survey
from vitkit.data.folder import SPLITS
from vitkit.engine import build
from vitkit.errors import UserError
from vitkit.recipe import load_recipe

from .conftest import ROOT
from .photos import draw_photo, folder_recipe, make_photo_folder, tiny_folder


def _csv_folder(root: Path, per_class: int = 10, subfolders: tuple[str, ...] = ("batch1", "batch2")) -> Path:
    """Images of two classes kept in ``subfolders`` (not class folders) and listed in ``root/labels.csv``."""
    import random

    rng = random.Random(0)
    rows = []
    for c, (label, shape) in enumerate((("cat", "disc"), ("dog", "square"))):
        for i in range(per_class):
            folder = subfolders[(c * per_class + i) % len(subfolders)]
            path = root / folder / f"{label}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            draw_photo(shape, 24 + i, 24, rng).save(path)
            rows.append((f"{folder}/{path.name}", label))
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return root


def _split(run_dir: Path) -> dict:
    return json.loads((run_dir / "split.json").read_text())


# ---------------------------------------------------------------------------------------------- 1


@pytest.mark.parametrize("subfolders", [("batch1", "batch2"), ("images",)])
def test_i22_1_a_labels_csv_wins_over_sub_folders(subfolders, tmp_path, write_recipe):
    root = _csv_folder(tmp_path / "photos", subfolders=subfolders)
    info = survey(root)  # what `vitkit run DIR` announces
    assert (info.layout, info.classes, info.images) == ("csv", ["cat", "dog"], 20)
    recipe = load_recipe(folder_recipe(tmp_path, root))  # a recipe without data.labels reads it the same way
    data = build.load_dataset(recipe, build.model_img_size(recipe))
    assert data.classes == ["cat", "dog"] and data.split_record["layout"] == "csv"
    assert sum(len(getattr(data, s)) for s in SPLITS) == 20


# ---------------------------------------------------------------------------------------------- 2


@pytest.mark.slow
def test_i22_2_vitkit_run_dot_never_trains_on_its_own_runs(cli, tmp_path, monkeypatch):
    root = make_photo_folder(tmp_path / "my_photos", "flat", classes=3, per_class=8, min_size=24, max_size=40)
    monkeypatch.chdir(root)  # `cd my_photos && vitkit run .`: output.dir = "runs" lands inside the data root
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    seen, said = [], []
    for _ in range(2):
        code, out, err = cli("run", ".", "--set", "train.epochs=1")
        assert code == 0, err
        run_dir = max((root / "runs").glob("*/*/"), key=lambda p: p.stat().st_mtime_ns)
        seen.append((_split(run_dir)["classes"], _split(run_dir)["sizes"]))
        said.append(out)
    assert seen[0] == seen[1] == (["disc", "square", "triangle"], {"train": 18, "val": 3, "test": 3})
    for out in said:
        assert "chose: imagefolder (flat, 3 classes, 24 images" in out
        assert "inside the image folder; vitkit never reads its own runs as images" in out


def test_i22_2_a_run_directory_or_marked_output_folder_is_not_a_class(tmp_path):
    from vitkit.data.folder import scan

    root = tiny_folder(tmp_path / "photos", per_class=4)
    old_run = root / "outputs" / "photos" / "20260101-000000"  # written before output folders were marked
    (old_run / "checkpoints").mkdir(parents=True)
    (old_run / "recipe.toml").write_text('name = "photos"\n')
    draw_photo("disc", 30, 30, __import__("random").Random(0)).save(old_run / "loss.png")
    assert scan(root)[0] == ["disc", "square", "triangle"]


# ---------------------------------------------------------------------------------------------- 3


def test_i22_3_duplicate_csv_rows_are_one_file_and_never_leak_across_splits(tmp_path, write_recipe):
    root = _csv_folder(tmp_path / "photos", per_class=20)
    rows = (root / "labels.csv").read_text().splitlines()
    (root / "labels.csv").write_text("\n".join([*rows, *rows[1:]]) + "\n")  # every image listed twice
    recipe = load_recipe(folder_recipe(tmp_path, root), ['data.labels="labels.csv"'])
    data = build.load_dataset(recipe, build.model_img_size(recipe))
    files = {name: [path for path, _ in data.split_record[name]] for name in SPLITS}
    assert sum(map(len, files.values())) == 40  # 40 files, not 80 rows
    assert all(len(set(f)) == len(f) for f in files.values())
    assert not set(files["train"]) & (set(files["val"]) | set(files["test"]))
    assert not set(files["val"]) & set(files["test"])


def test_i22_3_a_file_with_two_labels_is_an_error_naming_it(tmp_path):
    from vitkit.data.folder import read_csv_listing

    root = _csv_folder(tmp_path / "photos", per_class=3)
    with open(root / "labels.csv", "a") as f:
        f.write("batch2/cat1.png,dog\n")
    with pytest.raises(UserError, match=r"line 8: batch2/cat1.png is labelled 'dog' but line \d labels it 'cat'"):
        read_csv_listing(root / "labels.csv")


# ---------------------------------------------------------------------------------------------- 4


@pytest.mark.slow
def test_i22_4_eval_of_a_kfold_run_scores_the_images_it_validated_on(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=12)
    code, _, err = cli("run", folder_recipe(tmp_path, root), "--set", 'data.fold="2/3"')
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    code, _, err = cli("eval", run_dir, "--split", "val")
    assert code == 0, err
    report = json.loads((run_dir / "eval_val.json").read_text())
    assert report["count"] == summary["split_sizes"]["val"]
    assert report["val_acc"] == pytest.approx(summary["best_val_acc"], abs=1e-6)
    record = _split(run_dir)  # split.json records the folded splits the run used, and the fold
    assert record["fold"] == "2/3" and record["sizes"] == summary["split_sizes"] == {k: len(record[k]) for k in SPLITS}


def test_i22_4_a_split_file_from_before_folds_were_recorded_is_folded_like_the_run(tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=12)
    recipe = load_recipe(folder_recipe(tmp_path, root), ['data.fold="1/3"'])
    size = build.model_img_size(recipe)
    folded = build.load_dataset(recipe, size)
    plain = build.load_dataset(load_recipe(folder_recipe(tmp_path, root)), size)
    old = {**plain.split_record}
    old.pop("fold")  # a split.json written before this fix: the unfolded splits
    (tmp_path / "old.json").write_text(json.dumps(old))
    recipe.data.split_file = str(tmp_path / "old.json")
    again = build.load_dataset(recipe, size)
    for name in SPLITS:
        assert again.split_record[name] == folded.split_record[name]


# ---------------------------------------------------------------------------------------------- 5

HUB_REPO = "someone/vit-tiny-test"


def _fill_hub_cache(cache: Path) -> None:
    """An ``hf-hub:`` repo in the Hugging Face cache: timm's config.json layout and the weights."""
    import timm
    from safetensors.torch import save_file

    snapshot = cache / ("models--" + HUB_REPO.replace("/", "--")) / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    cfg = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").to_dict()
    keep = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode", "num_classes", "pool_size")
    config = {"architecture": "vit_tiny_patch16_224", "num_classes": 1000, "num_features": 192}
    config["pretrained_cfg"] = {k: v for k, v in cfg.items() if k in keep}
    (snapshot / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    state = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, snapshot / "model.safetensors")


def test_i22_5_an_hf_hub_model_gets_its_configs_crop_interpolation_and_normalisation(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    _fill_hub_cache(cache)
    root = tiny_folder(tmp_path / "photos", per_class=6)
    recipe = folder_recipe(tmp_path, root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    model = ["--set", "model.name='vit_tiny_patch16_224'", "--set", "model.img_size=32", "--set", "model.depth=12"]
    proc = subprocess.run(
        [sys.executable, "-m", "vitkit", "run", recipe, *model, "--set", f'model.pretrained="hf-hub:{HUB_REPO}"'],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    meta = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=False)["data"]
    assert (meta["crop_pct"], meta["interpolation"]) == (0.9, "bicubic")  # the config's, not 0.875 / bilinear
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.5, 0.5, 0.5]
    # the same weights named by timm's table resolve to the same preprocessing
    table = load_recipe(recipe, [*model[1::2], "model.pretrained=true"])
    hub = load_recipe(recipe, [*model[1::2], f'model.pretrained="hf-hub:{HUB_REPO}"'])
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import: patch them too
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert build.preprocessing(hub) == build.preprocessing(table)


# --------------------------------------------------------------------------------------------- 11


def test_i22_11_lr_auto_loads_the_data_once(cli, tmp_path, monkeypatch):
    from vitkit.data.datasets import ImageFolder

    loads = []
    real = ImageFolder.load
    monkeypatch.setattr(ImageFolder, "load", lambda self, **kw: loads.append(1) or real(self, **kw))
    root = tiny_folder(tmp_path / "photos", per_class=8)
    code, out, err = cli("run", folder_recipe(tmp_path, root), "--lr", "auto")
    assert code == 0, err
    assert "--lr auto: " in out and (next((tmp_path / "runs" / "photos").iterdir()) / "lr_find.png").is_file()
    assert len(loads) == 1
