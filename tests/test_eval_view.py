"""One evaluation view (issue 22, item 12): ``vitkit predict`` gives the model exactly the bytes evaluation does."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
from PIL import Image
from torch import nn

from .photos import draw_photo, folder_recipe, make_photo_folder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Recorder(nn.Module):
    """A 'model' that keeps the batches it is given and answers fixed logits."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(len(x), 2)


def evaluation_batch(path, img_size: int, crop_pct: float) -> torch.Tensor:
    """What ``vitkit eval`` feeds the model for ``path``: the dataset's base image, the eval transform."""
    from vitkit.data.datasets import ImageFiles
    from vitkit.data.imageio import base_size
    from vitkit.data.loaders import BatchTransform

    base, _ = ImageFiles([(path, 0)], base_size(img_size, crop_pct), 3, crop=img_size)[0]
    return BatchTransform(img_size, MEAN, STD, crop="center")(base[None], torch.zeros(1, dtype=torch.long))[0]


def test_i22_12_predict_input_for_a_jpeg_and_a_png_is_evaluations_batch(tmp_path):
    from vitkit.commands.predict.predictor import Predictor

    jpeg, png = tmp_path / "photo.jpg", tmp_path / "tall.png"
    draw_photo("disc", 1200, 900, random.Random(0)).save(jpeg, quality=90)  # decoded at 1/8 scale by eval
    draw_photo("cross", 300, 500, random.Random(1)).convert("RGBA").save(png)  # alpha dropped
    meta = {"classes": ["a", "b"], "in_chans": 3, "img_size": 32, "mean": MEAN, "std": STD}
    recorder = Recorder()
    predictor = Predictor(recorder, meta | {"crop_pct": 0.875, "interpolation": "bilinear"})
    with Image.open(png) as img:
        pil = img.copy()
    uint8 = torch.from_numpy(np.array(pil)).permute(2, 0, 1)  # (4, H, W) RGBA
    predictor.predict([jpeg, png, pil, uint8])
    (seen,) = recorder.seen
    expected = torch.cat([evaluation_batch(jpeg, 32, 0.875), *[evaluation_batch(png, 32, 0.875)] * 3])
    assert seen.shape == expected.shape == (4, 3, 32, 32)
    assert torch.equal(seen, expected), f"mean |difference| {(seen - expected).abs().mean():.5f}"


def test_i22_12_predict_probabilities_equal_evals_for_the_test_split(cli, tmp_path):
    from vitkit.commands.eval import reevaluate

    root = make_photo_folder(tmp_path / "photos", classes=3, per_class=8, min_size=120, max_size=240)
    code, _, err = cli("run", folder_recipe(tmp_path, root))
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    result, report = reevaluate(run_dir, device="cpu")  # what `vitkit eval RUN` computes
    split = json.loads((run_dir / "split.json").read_text())
    files = [root / rel for rel, _ in split["test"]]
    code, _, err = cli("predict", run_dir, *files, "--topk", 3, "--json", tmp_path / "p.json", "--device", "cpu")
    assert code == 0, err
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    classes = split["classes"]
    predicted = torch.tensor(
        [[dict((t["label"], t["probability"]) for t in r["topk"])[c] for c in classes] for r in rows]
    )
    assert predicted.shape == result.probabilities.shape == (len(files), 3)
    assert torch.allclose(predicted, result.probabilities, rtol=0, atol=1e-6), (
        f"max |difference| {(predicted - result.probabilities).abs().max():.2e}"
    )
    labels = torch.tensor([classes.index(label) for _, label in split["test"]])
    loss = float(-predicted[torch.arange(len(labels)), labels].log().mean())
    assert report["temperature"] != 1.0  # the run calibrated itself on val: predict and eval both use it
    assert abs(loss - report["test_loss_calibrated"]) < 1e-5
