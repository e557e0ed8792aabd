"""Your own photos (imagefolder): three layouts train, carved splits are disjoint and reused, small classes
are a clear error, EXIF orientation is applied everywhere, cached bases equal streamed ones, balancing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vitkit.data.folder import SPLITS, make_splits, scan

from .photos import draw_photo, folder_recipe, tiny_folder


def _split_files(run_dir: Path) -> dict[str, set[str]]:
    record = json.loads((run_dir / "split.json").read_text())
    return {name: {path for path, _ in record[name]} for name in SPLITS}


@pytest.mark.parametrize("layout", ["flat", "split", "csv"])
def test_each_layout_trains_with_disjoint_splits(layout, cli, tmp_path):
    kwargs = {"splits": ("train", "test"), "split_share": (0.7, 0.3)} if layout == "split" else {}
    root = tiny_folder(tmp_path / "photos", layout, **kwargs)
    class_dir = next(p.parent for p in sorted(root.rglob("*.jpg")))
    (class_dir / ".hidden.jpg").write_bytes(b"not looked at")  # hidden files and non-images: skipped quietly
    (class_dir / "notes.txt").write_text("not an image")
    args = ["--set", 'data.labels="labels.csv"'] if layout == "csv" else []
    code, _, err = cli("run", folder_recipe(tmp_path, root), *args)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    files = _split_files(run_dir)
    assert all(files[name] for name in SPLITS)
    assert (
        not (files["train"] & files["val"])
        and not (files["train"] & files["test"])
        and not (files["val"] & files["test"])
    )
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.jpg") if not p.name.startswith(".")}
    assert files["train"] | files["val"] | files["test"] == on_disk
    if layout == "split":  # test/ on disk stays the test split; val is carved from train/, never from test/
        assert files["test"] == {p for p in on_disk if p.startswith("test/")}
        assert all(p.startswith("train/") for p in files["val"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["split_sizes"] == {name: len(files[name]) for name in SPLITS}


def test_carving_is_stratified_and_fixed_by_split_seed(tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=20)
    classes, found, layout = scan(root)
    assert layout == "flat" and classes == ["disc", "square", "triangle"]
    a = make_splits(found, classes, 0.1, 0.2, seed=0)
    assert [len(a[s]) for s in SPLITS] == [42, 6, 12]  # per class: 14 / 2 / 4
    assert make_splits(found, classes, 0.1, 0.2, seed=0) == a
    assert make_splits(found, classes, 0.1, 0.2, seed=1)["test"] != a["test"]
    for split in SPLITS:
        assert sorted({label for _, label in a[split]}) == [0, 1, 2]


def test_nested_folders_count_and_mismatched_layouts_are_errors(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=6)
    nested = root / "disc" / "2024" / "trip"
    nested.mkdir(parents=True)
    shutil.copy(next((root / "disc").glob("*.jpg")), nested / "deep.jpg")
    classes, found, _ = scan(root)
    assert classes == ["disc", "square", "triangle"]  # "2024" is inside a class, not a class
    assert any(p.name == "deep.jpg" for p, label in found["train"] if label == 0)
    (tmp_path / "only_test" / "test" / "a").mkdir(parents=True)
    code, _, err = cli("run", folder_recipe(tmp_path, tmp_path / "only_test"))
    assert code == 2 and "has test/ but no train/ folder" in err and err.count("\n") == 1


def test_a_class_too_small_to_split_is_a_one_line_error_before_training(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=6)
    for extra in sorted((root / "square").glob("*.jpg"))[2:]:
        extra.unlink()  # 2 images: one for train, none left for val and test
    code, out, err = cli("run", folder_recipe(tmp_path, root))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert "class 'square' has 2 images in train: too few to carve test (0.1) and val (0.1)" in err
    assert "needs at least 3" in err and "epoch 1" not in out


def test_eval_and_resume_reuse_split_json_after_the_folder_changes(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos")
    code, _, err = cli("run", folder_recipe(tmp_path, root))
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    before = _split_files(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    for i in range(6):  # new photos would change a fresh carve
        draw_photo("disc", 40, 30, __import__("random").Random(i)).save(root / "disc" / f"new_{i}.jpg")
    code, out, err = cli("eval", run_dir)
    assert code == 0, err
    report = json.loads((run_dir / "eval_test.json").read_text())
    assert report["count"] == len(before["test"]) and report["test_acc"] == pytest.approx(summary["test_acc"])
    assert _split_files(run_dir) == before


def test_exif_orientation_is_applied_in_training_and_predict(tmp_path):
    from PIL import Image

    from vitkit.commands.predict.predictor import read_image
    from vitkit.data.datasets import ImageFiles
    from vitkit.data.imageio import load_base

    upright = Image.new("RGB", (40, 60), (0, 0, 0))
    upright.paste((255, 0, 0), (0, 0, 40, 30))  # the top half of the upright photo is red
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the sensor's landscape pixels (red on the left)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    shown = read_image(path)
    assert shown.size == (40, 60)
    from vitkit.data.imageio import to_uint8_tensor

    top = to_uint8_tensor(shown.convert("RGB"))[:, :25].float().mean(dim=(1, 2))
    assert top[0] > 200 and top[1] < 60  # red on top, as a viewer shows it
    base = ImageFiles([(path, 0)], 40, 3)[0][0]  # short side 40: rows 10..50 of the upright photo
    assert torch.equal(base, load_base(path, 3, 40))
    assert base[0, :18].float().mean() > 200 and base[0, 22:].float().mean() < 50  # red above, black below
    assert base[0, :, :18].float().mean() < 180  # not red on the left (the unrotated, sideways image)


def test_cached_base_images_equal_streamed_ones_and_disk_cache_is_reused(tmp_path, capsys):
    from vitkit.data.datasets import ImageFolder

    root = tiny_folder(tmp_path / "photos", per_class=6)
    streamed = ImageFolder(16, root=str(root), cache="off").load()
    memory = ImageFolder(16, root=str(root), cache="memory").load()
    disk_dir = tmp_path / "cache"
    disk = ImageFolder(16, root=str(root), cache="disk", cache_dir=str(disk_dir)).load()
    for name in SPLITS:
        files = getattr(streamed, name).files
        expected = torch.stack([files[i][0] for i in range(len(files))])
        assert expected.shape[1:] == (3, 18, 18)  # short side round(16 / 0.875)
        assert torch.equal(getattr(memory, name).images[torch.arange(len(files))], expected)
        assert torch.equal(getattr(disk, name).images[torch.arange(len(files))], expected)
        assert torch.equal(getattr(memory, name).labels, torch.tensor([label for _, label in files.samples]))
    assert "written" in capsys.readouterr().out
    again = ImageFolder(16, root=str(root), cache="disk", cache_dir=str(disk_dir)).load()
    assert "reused" in capsys.readouterr().out and torch.equal(
        again.train.images[torch.arange(3)], disk.train.images[torch.arange(3)]
    )
    first = next((root / "disc").glob("*.jpg"))
    draw_photo("square", 30, 30, __import__("random").Random(0)).save(first)  # a changed file: rebuilt
    ImageFolder(16, root=str(root), cache="disk", cache_dir=str(disk_dir)).load()
    out = capsys.readouterr().out
    assert "written" in out and "superseded" in out and len(list(disk_dir.glob("*.u8"))) == 1  # the old one removed


def test_eval_view_is_short_side_resize_then_centre_crop(tmp_path):
    from PIL import Image

    from vitkit.data.crops import BatchRandomResizedCrop
    from vitkit.data.imageio import load_base
    from vitkit.data.loaders import BatchTransform

    img = Image.new("RGB", (80, 40), (0, 0, 255))
    img.paste((255, 255, 255), (30, 0, 50, 40))  # a white vertical band in the middle
    img.save(tmp_path / "wide.png")
    base = load_base(tmp_path / "wide.png", 3, 20)  # 40x20 -> centre 20x20: columns 15..35 of the 80-wide image
    assert base.shape == (3, 20, 20) and base[0, :, 10].float().mean() > 250 and base[0, :, 0].float().mean() < 10
    tf = BatchTransform(16, (0, 0, 0), (1, 1, 1), crop="center")
    x, _ = tf(base[None], torch.zeros(1, dtype=torch.long))
    assert x.shape == (1, 3, 16, 16) and torch.allclose(x[0], base[:, 2:18, 2:18].float() / 255)
    crops = BatchRandomResizedCrop(16, (0.25, 1.0))(base[None].float().expand(32, -1, -1, -1) / 255)
    assert crops.shape == (32, 3, 16, 16) and crops.min() >= 0 and crops.max() <= 1 + 1e-5
    assert crops.std(dim=0).mean() > 0.01  # different crops per image
    full = BatchRandomResizedCrop(20, (1.0, 1.0), (1.0, 1.0))(base[None].float())
    assert torch.allclose(full[0], base.float(), atol=1e-3)  # the whole image at its own size: itself


def test_balance_sampler_draws_classes_evenly_and_loss_weights_them(tmp_path):
    from vitkit.data.loaders import epoch_order
    from vitkit.data.setup import apply_balance
    from vitkit.losses import cross_entropy
    from vitkit.recipe import recipe_from_dict

    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(labels).float())[labels]
    drawn = labels[epoch_order(100, 0, 1, weights)]
    assert abs(int((drawn == 1).sum()) - 50) < 15  # ~50/50 instead of 90/10
    assert torch.equal(epoch_order(100, 0, 1, weights), epoch_order(100, 0, 1, weights))

    from types import SimpleNamespace

    from vitkit.data.datasets import ImageSet
    from vitkit.data.loaders import BatchTransform, InMemoryLoader

    data = SimpleNamespace(classes=["a", "b"])

    def loader() -> InMemoryLoader:
        images = torch.zeros(100, 1, 4, 4)
        return InMemoryLoader(ImageSet(images, labels), 10, BatchTransform(4, (0,), (1,)), torch.device("cpu"), True)

    loss, sampled = cross_entropy(), loader()
    apply_balance(recipe_from_dict({"data": {"balance": "sampler"}}), data, sampled, loss)
    assert torch.allclose(sampled.sample_weights, weights)
    apply_balance(recipe_from_dict({"data": {"balance": "loss"}}), data, loader(), loss)
    assert torch.allclose(loss.class_weight, torch.tensor([50 / 90, 50 / 10]))
    logits, targets = torch.randn(6, 2), torch.tensor([0, 0, 0, 0, 1, 1])
    assert torch.allclose(
        loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets, weight=loss.class_weight)
    )


def test_balance_sampler_trains_an_imbalanced_folder(cli, tmp_path):
    root = tiny_folder(tmp_path / "photos", per_class=12)
    for extra in sorted((root / "triangle").glob("*.jpg"))[4:]:
        extra.unlink()
    code, _, err = cli("run", folder_recipe(tmp_path, root), "--set", 'data.balance="sampler"')
    assert code == 0, err


KILL_PLUGIN = """
import os
import signal

import vitkit


@vitkit.hookimpl
def vitkit_on_epoch_end(run, epoch, metrics):
    if epoch == 2:  # last.pt of epoch 2 is saved: die as a power cut would
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_streamed_folder_resumes_bit_identical_after_a_kill(cli, tmp_path):
    """Workers decode and augment per sample (RandAugment); order and draws depend on (seed, epoch) only."""
    import csv
    import os
    import subprocess
    import sys

    from .conftest import ROOT

    root = tiny_folder(tmp_path / "photos", per_class=8)
    overrides = [
        "--set", 'data.cache="off"', "--set", "data.num_workers=2", "--set", "train.epochs=4",
        "--set", 'augment.train=[{ name = "randaugment", num_ops = 2, magnitude = 9 }]',
    ]  # fmt: skip
    recipe = folder_recipe(tmp_path, root)
    code, _, err = cli("run", recipe, *overrides)
    assert code == 0, err
    (reference,) = (tmp_path / "runs" / "photos").iterdir()
    recipe = folder_recipe(tmp_path, root, name="killed.toml")
    recipe.write_text(recipe.read_text().replace('name = "photos"', 'name = "killed"'))
    (tmp_path / "kill.py").write_text(KILL_PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "vitkit", "run", str(recipe), "--plugin", str(tmp_path / "kill.py")]
    done = subprocess.run([*args, *overrides], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr
    (killed,) = (tmp_path / "runs" / "killed").iterdir()
    assert not (killed / "summary.json").exists()
    code, _, err = cli("run", "--resume", killed)
    assert code == 0, err

    def rows(run_dir: Path) -> list[tuple[str, ...]]:
        keys = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
        return [tuple(r[k] for k in keys) for r in csv.DictReader((run_dir / "metrics.csv").read_text().splitlines())]

    assert len(rows(reference)) == 4 and rows(killed) == rows(reference)
    assert (
        json.loads((killed / "split.json").read_text())["test"]
        == json.loads((reference / "split.json").read_text())["test"]
    )


def test_compare_scores_every_variant_on_the_first_variants_split(cli, tmp_path):
    import tomllib

    root = tiny_folder(tmp_path / "photos", per_class=6)
    out = tmp_path / "cmp"
    code, _, err = cli("compare", folder_recipe(tmp_path, root), "--vary", "seed=1,2", "--out", out)
    assert code == 0, err
    runs = sorted(out.glob("*/*/split.json"))
    assert len(runs) == 2 and runs[0].read_text() == runs[1].read_text()
    recipes = [tomllib.loads((p.parent / "recipe.toml").read_text())["data"]["split_file"] for p in runs]
    assert sorted(recipes) == ["", str(runs[0])] or sorted(recipes) == ["", str(runs[1])]


def test_nvjpeg_path_resize_matches_the_cpu_reader_when_run_on_cpu(tmp_path):
    """The GPU path's decode (torchvision.io, EXIF applied) and resize, run on the CPU: same base image."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from vitkit.data.decode import gpu_base
    from vitkit.data.imageio import load_base

    draw_photo("cross", 120, 70, __import__("random").Random(5)).save(tmp_path / "p.jpg", quality=95)
    decoded = decode_jpeg(read_file(str(tmp_path / "p.jpg")), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    gpu_style = gpu_base(decoded, 37, "bilinear")
    assert gpu_style.shape == load_base(tmp_path / "p.jpg", 3, 37).shape == (3, 37, 37)
    assert (gpu_style.float() - load_base(tmp_path / "p.jpg", 3, 37).float()).abs().mean() < 6  # of 255
