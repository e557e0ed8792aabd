"""``vitkit run DIR``: a recipe chosen for a folder of images, printed, runnable, reproducible."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import tomllib
from huggingface_hub import constants

from tests.conftest import TINY_DIGITS
from tests.photos import make_photo_folder
from vitkit.commands.run.folder import PRETRAINED, SCRATCH, choose, with_found_lr
from vitkit.recipe import load_recipe


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache (constants are read at import: patch them too)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def photos(tmp_path) -> Path:
    """A flat folder of small JPEGs of varied sizes: 3 classes x 8 images."""
    return make_photo_folder(tmp_path / "my_photos", "flat", classes=3, per_class=8, min_size=24, max_size=48)


def _fill_cache(cache: Path, model: str) -> None:
    """Put a (dummy) weights file where huggingface_hub caches timm's default weights of ``model``."""
    import timm

    repo = timm.models.get_pretrained_cfg(model).hf_hub_id
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    (folder / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("0" * 40) / "model.safetensors").write_bytes(b"weights")


def test_dry_run_prints_the_chosen_recipe_as_toml(cli, photos, offline, tmp_path):
    code, out, err = cli("run", photos, "--dry-run")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(f"# vitkit run {photos} chose: imagefolder (flat, 3 classes, 24 images, 18 to train)")
    assert f"{SCRATCH} from scratch" in first and "HF_HUB_OFFLINE is set" in first
    recipe = tomllib.loads(out)
    assert recipe["data"] == {
        "dataset": "imagefolder", "root": str(photos.resolve()), "batch_size": 4, "crop_scale": 0.35
    }  # fmt: skip
    assert recipe["model"]["name"] == SCRATCH and recipe["model"]["img_size"] == 64
    assert 20 <= recipe["train"]["epochs"] <= 100
    saved = tmp_path / "my.toml"  # vitkit run DIR --dry-run > my.toml
    saved.write_text(out)
    assert load_recipe(saved).data.dataset == "imagefolder"
    code, out, _ = cli("run", photos, "--dry-run", "--set", "train.epochs=3", "--set", "optimizer.lr=5e-4")
    assert tomllib.loads(out)["train"]["epochs"] == 3 and tomllib.loads(out)["optimizer"]["lr"] == 5e-4


def test_pretrained_when_the_weights_are_cached(tmp_path, offline):
    for model in PRETRAINED.values():
        _fill_cache(offline, model)
    folder = tmp_path / "many"
    jpeg = make_photo_folder(tmp_path / "one", "flat", classes=2, per_class=1, min_size=8, max_size=8)
    pixels = next(jpeg.rglob("*.jpg")).read_bytes()
    for name in ("a", "b", "c"):  # only readable images count: one small JPEG, copied
        (folder / name).mkdir(parents=True)
        for i in range(120):
            (folder / name / f"{i}.jpg").write_bytes(pixels)
    cpu = choose(folder, device="cpu")
    assert cpu.recipe["model"] == {"name": PRETRAINED["cpu"], "pretrained": True, "drop_path_rate": 0.1}
    assert "weights cached" in cpu.line and "4x slower on CPU" in cpu.line
    assert cpu.recipe["data"]["batch_size"] == 64 and 5 <= cpu.recipe["train"]["epochs"] <= 30
    gpu = choose(folder, device="cuda")
    assert gpu.recipe["model"]["name"] == PRETRAINED["cuda"] and gpu.recipe["model"]["pretrained"]
    assert gpu.recipe["data"]["batch_size"] == "auto" and "at batch 64" in gpu.line
    assert gpu.recipe["optimizer"]["layer_decay"] == 0.65


def test_folders_that_cannot_train_are_one_line_errors(cli, tmp_path, offline):
    (tmp_path / "empty").mkdir()
    (tmp_path / "one" / "cats").mkdir(parents=True)
    (tmp_path / "one" / "cats" / "a.jpg").touch()
    for folder, says in (("empty", "neither a TOML recipe nor a folder of images"), ("one", "at least two class")):
        code, _, err = cli("run", tmp_path / folder, "--dry-run")
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if k not in ("time", "img_per_s")} for row in csv.DictReader(handle)]


def test_run_folder_trains_and_its_recipe_reproduces_the_metrics(cli, photos, offline, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = cli("run", photos, "--set", "train.epochs=2", "--set", f'output.dir="{runs}"')
    assert code == 0, err
    assert f"vitkit run {photos} chose: imagefolder (flat" in out
    (first,) = list((runs / "my_photos").iterdir())
    summary = json.loads((first / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 18, "val": 3, "test": 3}
    code, _, err = cli("run", first / "recipe.toml")
    assert code == 0, err
    (second,) = [d for d in (runs / "my_photos").iterdir() if d != first]
    again = json.loads((second / "summary.json").read_text())
    for key in ("test_acc", "test_loss", "best_val_acc", "final_train_loss"):
        assert again[key] == summary[key], key
    assert _metrics(second) == _metrics(first) and len(_metrics(first)) == 2


def test_lr_find_on_a_folder(cli, photos, offline, tmp_path):
    code, out, err = cli("lr-find", photos, "--steps", "20", "--start", "1e-5", "--end", "1", "--out", tmp_path)
    assert code == 0, err
    assert "chose: imagefolder" in out and "lr-find: 20 updates planned" in out
    assert (tmp_path / "lr_find.png").is_file()


def test_lr_auto_sets_the_valley_suggestion(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(TINY_DIGITS))
    found, how, result = with_found_lr(recipe, steps=30)
    assert found.optimizer["lr"] == float(f"{result.suggestions['valley']:.2g}")
    assert found.optimizer["lr"] != recipe.optimizer["lr"] and found.train == recipe.train
    assert f"--lr auto: {found.optimizer['lr']:g} (lr-find valley" in how


@pytest.mark.slow
def test_run_lr_auto_records_the_found_lr_and_its_curve(cli, write_recipe, tmp_path):
    recipe = write_recipe(TINY_DIGITS + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    code, out, err = cli("run", recipe, "--lr", "auto", "--set", "train.epochs=1")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("--lr auto: "))
    lr = float(line.split()[2])
    (run_dir,) = list((tmp_path / "runs" / "tiny").iterdir())
    assert load_recipe(run_dir / "recipe.toml").optimizer["lr"] == lr != 3e-3
    assert (run_dir / "lr_find.png").is_file() and (run_dir / "lr_find.csv").is_file()
    code, _, err = cli("run", recipe, "--lr", "0.1")
    assert code == 2 and "only 'auto'" in err
