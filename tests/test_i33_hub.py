"""Issue 33 items 4 and 10: the hf export means what vitkit does (a consumer of timm Hub folders that follows
config.json gets vitkit's top-1) and its model card says what the run's summary and audit say."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

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
    assert main(["run", str(recipe), "--threads", "1", "--set", "output.plots=false"]) == 0
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


# -------------------------------------------------------------------------------------------- item 4

CROPS = (0.875, 0.9, 1.0)
SIZES = [(37, 23), (23, 37), (64, 41), (41, 66), (33, 33), (45, 52), (120, 77), (77, 121), (203, 131), (96, 300)]


def _photos(folder: Path, seed: int = 5) -> list[Path]:
    """Non-square (and a square) photos of varied sizes, JPEG and PNG alike, large ones included (JPEG
    decoding at a reduced scale would change them)."""
    import random

    from .photos import draw_photo

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    files = []
    for n, (w, h) in enumerate(SIZES * 2):
        path = folder / f"p{n:02d}.{'jpg' if n % 2 else 'png'}"
        draw_photo(rng.choice(["circle", "square", "triangle"]), w, h, rng).save(path)
        files.append(path)
    return files


def _digits_on_canvas(folder: Path, n: int = 40) -> list[Path]:
    """scikit-learn digits drawn at 32 x 32 on a 48 x 32 black canvas (left, centre or right), as PNGs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[-n:]
    folder.mkdir(parents=True)
    files = []
    for i, digit in enumerate(images):
        canvas = Image.new("L", (48, 32))
        glyph = Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
        canvas.paste(glyph, (8 * (i % 3), 0))
        files.append(folder / f"d{i:02d}.png")
        canvas.save(files[-1])
    return files


def _consumers(folder: Path, files: list[Path]) -> dict[str, torch.Tensor]:
    """Logits of ``files`` computed only from the exported folder, as consumers of timm Hub folders do:
    timm's model from ``local-dir:``, its data config (``resolve_data_config(model=...)``, and the same from
    ``config.json``'s ``pretrained_cfg`` alone), timm's ``create_transform`` applied to PIL images."""
    import timm
    from PIL import Image

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    config = json.loads((folder / "config.json").read_text())
    mode = "L" if config["pretrained_cfg"]["input_size"][0] == 1 else "RGB"
    out = {}
    ways = {
        "resolve_data_config(model=)": timm.data.resolve_data_config({}, model=model),
        "resolve_data_config(pretrained_cfg=config.json)": timm.data.resolve_data_config(
            pretrained_cfg=config["pretrained_cfg"]
        ),
    }
    for name, cfg in ways.items():
        transform = timm.data.create_transform(**cfg)
        with torch.no_grad():
            out[name] = model(torch.stack([transform(Image.open(f).convert(mode)) for f in files]))
    return out


def _agree(run: Path, folder: Path, files: list[Path], what: str) -> None:
    """vitkit's top-1 (``vitkit.load(run).predict``) equals the consumers' on every file; probabilities close."""
    import vitkit

    predictor = vitkit.load(run, device="cpu")
    k = len(predictor.classes)
    ours = predictor.predict(files, topk=k)
    probs = torch.tensor([[dict(p.topk)[c] for c in predictor.classes] for p in ours])
    for name, logits in _consumers(folder, files).items():
        theirs = torch.softmax(logits / predictor.temperature, dim=1)  # the card: divide by the temperature
        same = int((theirs.argmax(1) == probs.argmax(1)).sum())
        gap = float((theirs - probs).abs().max())
        print(f"{what} {name}: top-1 equal on {same}/{len(files)}, max |prob diff| {gap:.2e}")
        assert same == len(files), (what, name, same)
        assert gap < 1e-5, (what, name, gap)


@pytest.fixture(scope="module")
def crop_runs(tmp_path_factory) -> dict[float, tuple[Path, Path]]:
    """Per crop_pct, a 1-epoch imagefolder run of a 32 px ViT and its hf export."""
    from .photos import tiny_folder

    tmp = tmp_path_factory.mktemp("crops")
    root = tiny_folder(tmp / "photos", per_class=6)
    runs = {}
    for crop in CROPS:
        out = tmp / f"crop{crop}"
        out.mkdir()
        recipe = folder_recipe(out, root)
        recipe.write_text(recipe.read_text().replace("depth = 1", "depth = 1\nimg_size = 32"))
        assert (
            main(
                ["run", str(recipe), "--set", f"data.crop_pct={crop}", "--set", "output.plots=false", "--threads", "1"]
            )
            == 0
        )
        (run,) = (out / "runs" / "photos").iterdir()
        assert main(["export", str(run), "--format", "hf", "--out", str(out / "hf")]) == 0
        runs[crop] = run, out / "hf"
    return runs


@pytest.mark.parametrize("crop", CROPS)
def test_i33_4_hf_folder_gives_vitkits_top1_on_non_square_photos(crop_runs, crop, tmp_path):
    run, folder = crop_runs[crop]
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["crop_pct"] == crop
    _agree(run, folder, _photos(tmp_path / "photos"), f"photos crop_pct {crop}")


def test_i33_4_hf_folder_of_an_in_memory_run_gives_vitkits_top1_on_digits_on_a_wide_canvas(tmp_path):
    from .conftest import TINY_DIGITS

    recipe = tmp_path / "digits.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    assert (
        main(
            [
                "run",
                str(recipe),
                "--set",
                f'output.dir="{tmp_path / "runs"}"',
                "--set",
                "output.plots=false",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    _agree(run, tmp_path / "hf", _digits_on_canvas(tmp_path / "digits"), "digits on 48x32")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())["pretrained_cfg"]
    assert (cfg["crop_mode"], cfg["crop_pct"]) == ("squash", 1.0)  # the whole image, resized to the input


def test_i33_also_imagenet_mean_std_is_one_constant_the_file_datasets_and_the_export_use(crop_runs):
    import timm.data

    from vitkit.data import datasets, hf, webdataset

    assert datasets.IMAGENET_MEAN == timm.data.IMAGENET_DEFAULT_MEAN
    assert datasets.IMAGENET_STD == timm.data.IMAGENET_DEFAULT_STD
    for module in (datasets.ImageFolder, webdataset.WebDataset, hf.HuggingFace):
        assert (module.mean, module.std) == (datasets.IMAGENET_MEAN, datasets.IMAGENET_STD), module
    _, folder = crop_runs[0.875]  # a photo run from scratch: normalised by the dataset's statistics
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert (tuple(cfg["mean"]), tuple(cfg["std"])) == (datasets.IMAGENET_MEAN, datasets.IMAGENET_STD)


def test_i33_4_an_image_cache_of_the_old_geometry_is_never_reused(tmp_path, capsys):
    """A disk cache written before this fix (cache version 2: round(img_size / crop_pct), reduced-size JPEG
    decoding, floor crop offsets) is decoded again, not served with the old bases."""
    from vitkit.data.cache import build_cache
    from vitkit.data.imageio import base_size, load_base

    files, cache_dir = _photos(tmp_path / "photos")[:6], tmp_path / "cache"
    size = base_size(32, 0.9)
    assert size == 35  # timm's floor (round gave 36)
    build_cache(files, 3, size, "bilinear", "disk", cache_dir, 1.0, 0, crop=32)
    (meta_path,) = cache_dir.glob("*.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "version": 2}))  # as vitkit wrote it before
    capsys.readouterr()
    store, rows, _ = build_cache(files, 3, size, "bilinear", "disk", cache_dir, 1.0, 0, crop=32)
    out = capsys.readouterr().out
    assert "written" in out and "reused" not in out, out
    assert all(
        torch.equal(store[int(r)], load_base(f, 3, size, "bilinear", crop=32)) for f, r in zip(files, rows, strict=True)
    )
