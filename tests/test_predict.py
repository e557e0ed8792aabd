"""Prediction on image files, the Python API, attention maps and the evaluation report of a tiny digits run."""

import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.commands.predict.attention_maps import attention_maps, rollout
from vitkit.commands.predict.command import predict_files
from vitkit.commands.predict.predictor import Predictor
from vitkit.data import BatchTransform
from vitkit.data.datasets import Digits
from vitkit.errors import UserError
from vitkit.viz import Panel, plot_grid

from .conftest import TINY_DIGITS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("runs")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 6"))
    assert main(["run", str(recipe), "--set", f'output.dir="{out}"']) == 0
    (path,) = (out / "tiny").iterdir()
    return path


@pytest.fixture(scope="module")
def test_split():
    return Digits(img_size=8).load().test


def save_digit(image: torch.Tensor, path, size: int = 8) -> None:
    """A digits image (1, 8, 8) in [0, 1] as a grey file, upscaled to ``size``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (image[0] * 255).round().byte().numpy()
    Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(path, quality=95)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, test_split):
    """The first 60 test images as class-folder files: 8x8 PNGs, and every fourth as a 32x32 JPG."""
    root = tmp_path_factory.mktemp("images")
    for i in range(60):
        label = int(test_split.labels[i])
        if i % 4 == 3:
            save_digit(test_split.images[i], root / str(label) / f"{i:03d}.jpg", size=32)
        else:
            save_digit(test_split.images[i], root / str(label) / f"{i:03d}.png")
    return root


def read_json(path):
    return json.loads(path.read_text())


def test_predict_on_a_folder_agrees_with_the_models_accuracy(run_dir, image_folder, test_split, cli, tmp_path):
    code, out, err = cli("predict", run_dir, image_folder, "--json", tmp_path / "p.json", "--batch-size", 16)
    assert code == 0, err
    results = read_json(tmp_path / "p.json")["results"]
    assert len(results) == 60 and all(r["error"] is None for r in results)
    assert all(r["true_label"] == r["source"].split("/")[-2] for r in results)  # from the class folder
    file_acc = sum(r["correct"] for r in results) / len(results)

    # the same 60 images straight from memory through the training pipeline's transform
    predictor = vitkit.load(run_dir)
    transform = BatchTransform(predictor.img_size, predictor.data["mean"], predictor.data["std"])
    x, y = transform(test_split.images[:60], test_split.labels[:60])
    with torch.no_grad():
        memory_pred = predictor.model(x).argmax(1)
    memory_acc = float((memory_pred == y).float().mean())
    assert memory_acc > 0.5  # the tiny run is far above chance (0.1)
    assert file_acc == pytest.approx(memory_acc, abs=0.05)
    order = sorted(range(60), key=lambda i: f"{int(test_split.labels[i])}/{i:03d}")
    same = sum(r["label"] == str(int(memory_pred[i])) for r, i in zip(results, order, strict=True))
    assert same >= 55  # PNG/JPG round trips change at most a few borderline images
    assert f"accuracy on 60 images in class-named folders: {file_acc:.4f}" in out


def test_corrupt_and_text_files_get_error_rows(run_dir, image_folder, cli, tmp_path):
    folder = tmp_path / "mixed"
    good = sorted(image_folder.rglob("*.png"))[:3]
    for i, path in enumerate(good):
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / f"good{i}.png").write_bytes(path.read_bytes())
    big = tmp_path / "big.png"
    Image.new("L", (64, 64)).save(big)  # large enough that cutting it truncates the pixel data
    (folder / "truncated.png").write_bytes(big.read_bytes()[: len(big.read_bytes()) // 2])
    (folder / "fake.jpg").write_text("not really a jpeg")
    (folder / "notes.txt").write_text("hello")
    code, out, _ = cli("predict", run_dir, folder, "--json", tmp_path / "p.json", "--topk", 2)
    assert code == 0
    results = {r["source"].split("/")[-1]: r for r in read_json(tmp_path / "p.json")["results"]}
    assert len(results) == 6
    assert "truncated" in results["truncated.png"]["error"]
    assert "not a readable image" in results["fake.jpg"]["error"]
    assert "not an image file" in results["notes.txt"]["error"]
    assert all(results[f"good{i}.png"]["error"] is None and results[f"good{i}.png"]["label"] for i in range(3))
    assert out.count("error:") == 3


def test_exit_code_1_when_no_image_was_predicted(run_dir, cli, tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, _ = cli("predict", run_dir, tmp_path)
    assert code == 1 and out.count("error:") == 2


def test_missing_path_is_a_user_error(run_dir, cli, tmp_path):
    code, _, err = cli("predict", run_dir, tmp_path / "nope")
    assert code == 2 and "does not exist" in err


def test_json_topk_is_sorted_and_sums_to_at_most_one(run_dir, image_folder, cli, tmp_path):
    code, _, _ = cli("predict", run_dir, image_folder, "--topk", 3, "--json", tmp_path / "p.json")
    assert code == 0
    data = read_json(tmp_path / "p.json")
    assert data["topk"] == 3 and data["classes"] == [str(i) for i in range(10)]
    for result in data["results"]:
        probs = [t["probability"] for t in result["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 1e-6
        assert result["label"] == result["topk"][0]["label"] and result["probability"] == probs[0]


def test_grid_png_has_one_panel_per_image(run_dir, image_folder, cli, tmp_path):
    folder = tmp_path / "seven"
    for path in sorted(image_folder.rglob("*.png"))[:7]:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        (folder / path.parent.name / path.name).write_bytes(path.read_bytes())
    code, _, _ = cli("predict", run_dir, folder, "--out", tmp_path / "grid.png")
    assert code == 0
    with Image.open(tmp_path / "grid.png") as grid:
        size = grid.size
    # 7 panels -> 3 columns x 3 rows of 160 px under a 40 px title
    assert size == (3 * 160, 3 * 160 + 40)
    layout = plot_grid([Panel(torch.rand(8, 8).numpy(), "x")] * 7, tmp_path / "g.png")
    assert (layout.panels, layout.rows, layout.cols) == (7, 3, 3) and layout.size == size
    code, _, _ = cli("predict", run_dir, folder, "--attention", "--out", tmp_path / "att.png")
    assert code == 0
    with Image.open(tmp_path / "att.png") as att:  # image, rollout, last layer: one row per image
        assert att.size == (3 * 160, 7 * 160 + 40)


def test_python_api_accepts_paths_pil_images_and_tensors(run_dir, image_folder, test_split):
    predictor = vitkit.load(run_dir)
    path = sorted(image_folder.rglob("*.png"))[0]
    with Image.open(path) as img:
        pil = img.copy()
    tensor = test_split.images[0]  # (1, 8, 8) float
    results = predictor.predict([path, pil, tensor, tensor.expand(3, -1, -1)], topk=2)
    assert [len(r.topk) for r in results] == [2, 2, 2, 2]
    assert results[0].label == results[1].label and results[0].true_label == path.parent.name
    assert results[2].label == results[3].label  # an RGB copy of a grey image is converted back to grey
    folder = predictor.predict(image_folder)  # a folder: every file under it
    assert len(folder) == 60 and all(r.error is None and r.true_label for r in folder)
    batch = predictor.predict(test_split.images[:5])  # a (B, C, H, W) tensor
    assert len(batch) == 5 and all(r.error is None for r in batch)
    # the checkpoint and model.safetensors give the same model
    from_st = vitkit.load(run_dir / "model.safetensors").predict(test_split.images[:5])
    assert [r.topk for r in from_st] == [r.topk for r in batch]
    (bad,) = predictor.predict([3])
    assert bad.label is None and "cannot predict on a int" in bad.error


def test_import_vitkit_does_not_import_torch():
    code = "import sys, vitkit; vitkit.load; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_attention_maps_have_the_images_size(run_dir, test_split):
    predictor = vitkit.load(run_dir)
    pil = Image.fromarray((test_split.images[1, 0] * 255).byte().numpy()).resize((40, 30))
    maps = predictor.attention([test_split.images[0], pil, torch.rand(1, 23, 17)])
    assert [tuple(m.rollout.shape) for m in maps] == [(8, 8), (30, 40), (23, 17)]
    assert [tuple(m.last.shape) for m in maps] == [(8, 8), (30, 40), (23, 17)]
    assert all(m.pooling == "mean" for m in maps)  # the nano digits model is mean-pooled
    for m in maps:
        assert float(m.rollout.min()) >= 0 and float(m.rollout.max()) <= 1 and float(m.rollout.max()) > 0.9


def test_rollout_rows_stay_distributions_and_class_token_models_work():
    a = torch.rand(2, 5, 5).softmax(-1)
    rolled = rollout([a, a.flip(1).softmax(-1)])
    assert torch.allclose(rolled.sum(-1), torch.ones(2, 5))
    model = vitkit.create_model(
        "vit", img_size=16, patch_size=4, in_chans=3, num_classes=4, embed_dim=32, depth=2, num_heads=2
    ).eval()
    maps = attention_maps(model, torch.randn(2, 3, 16, 16), [(16, 16), (50, 70)])
    assert maps[0].pooling == "cls" and tuple(maps[1].last.shape) == (50, 70)


def test_attention_variant_without_weights_says_so(tmp_path):
    from torch import nn

    @vitkit.register_attention("test_no_weights", override=True)
    class NoWeights(nn.Module):
        """Identity mixing: no attention weights to show."""

        def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
            super().__init__()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)

    model = vitkit.create_model("vit_nano_patch4_16", depth=1, attention="test_no_weights")
    data = {"classes": [str(i) for i in range(10)], "in_chans": 1, "img_size": 16, "mean": [0.3], "std": [0.38]}
    predictor = Predictor(model, data)
    with pytest.raises(UserError, match="attention 'test_no_weights' does not expose its attention weights"):
        predictor.attention(torch.rand(1, 8, 8))
    path = tmp_path / "3" / "a.png"
    save_digit(torch.rand(1, 8, 8), path)
    outcome = predict_files(predictor, [path], attention=True)
    assert outcome.predicted == 1 and "does not expose" in outcome.attention_note


def test_run_and_eval_write_the_report(run_dir, cli):
    for name in ("confusion.png", "misclassified.png", "predictions.png", "lr.png", "report_test.json"):
        assert (run_dir / name).read_bytes()[:1] in (b"\x89", b"{"), name  # written by `vitkit run`
    code, out, err = cli("eval", run_dir / "checkpoints" / "best.pt", "--split", "val")  # a checkpoint works too
    assert code == 0, err
    report = read_json(run_dir / "report_val.json")
    assert sum(map(sum, report["confusion"])) == report["count"] == 143  # the digits val split
    assert (run_dir / "confusion_val.png").is_file() and (run_dir / "misclassified_val.png").is_file()
    test_report = read_json(run_dir / "report_test.json")
    assert sum(map(sum, test_report["confusion"])) == 359
    correct = sum(test_report["confusion"][i][i] for i in range(10))
    assert correct / 359 == pytest.approx(test_report["acc"])
    rows = test_report["per_class"]
    assert [r["class"] for r in rows] == [str(i) for i in range(10)] and sum(r["support"] for r in rows) == 359
    assert all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["f1"] <= 1 for r in rows)
    assert "per class" in out and "macro avg" in out
    assert not math.isnan(rows[0]["f1"])


def test_grid_keeps_the_first_images_across_batches(run_dir, image_folder):
    predictor = vitkit.load(run_dir)
    files = sorted(image_folder.rglob("*.png"))[:12]
    outcome = predict_files(predictor, files, batch_size=5, keep=7, attention=True)
    assert outcome.predicted == 12 and len(outcome.thumbs) == 7
    assert [p.source for p, _, _ in outcome.thumbs] == [str(f) for f in files[:7]]
    assert all(m is not None and m.rollout.shape == image.shape[-2:] for _, image, m in outcome.thumbs)


def test_camera_rotation_is_applied(tmp_path):
    from vitkit.commands.predict.predictor import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    Image.new("L", (40, 20)).save(tmp_path / "photo.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").size == (20, 40)


def test_i34_3_open_run_is_the_same_run_from_its_directory_checkpoint_and_safetensors(run_dir, tmp_path):
    """``open_run`` of a run directory, its ``best.pt`` and its ``model.safetensors``: the same weights,
    classes, temperature and preprocessing; the directory's data are the files of its split.json."""
    import json

    import torch

    from vitkit import open_run
    from vitkit.errors import UserError

    runs = [open_run(p) for p in (run_dir, run_dir / "checkpoints" / "best.pt", run_dir / "model.safetensors")]
    size = runs[0].data["img_size"]
    x = torch.rand(4, 1, size, size)
    logits = [run.model(x) for run in runs]
    assert all(torch.equal(logits[0], other) for other in logits[1:])
    assert {run.run_dir for run in runs} == {run_dir} and all(run.in_run_dir for run in runs)
    assert len({(tuple(r.classes), r.temperature, r.preprocessing, r.name) for r in runs}) == 1
    assert runs[0].state["epoch"] >= 1 and runs[2].state == {} and runs[2].recipe_data is None
    assert runs[2].recipe().name == runs[0].recipe().name == "tiny"  # a model file in its run: recipe.toml
    data = runs[0].load_data(only=("test",))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(data.test) == summary["split_sizes"]["test"] and data.classes == runs[0].classes
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run_dir / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="holds no recipe"):
        open_run(lone).recipe()
