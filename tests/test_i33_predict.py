"""Issue 33, items 3, 5 and 8: ``--tta crops`` in predict and serve cuts its views from the base image eval
cuts them from; serve answers a multi-label image with no label above its threshold as predict does;
predict reads every image suffix training reads (``.gif``)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.evaluation.calibration import expected_calibration_error

from .photos import draw_photo, folder_recipe, tiny_folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A tiny imagefolder run (3 classes of small JPEGs and two GIFs each; 16 px input, crop_pct 0.5, so
    its base images are 32 px and TTA's corner crops far from the centre) and its data root."""
    from vitkit.cli import main

    tmp = tmp_path_factory.mktemp("i33")
    root = tiny_folder(tmp / "photos", per_class=8)
    rng = random.Random(3)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for i in range(2):  # a GIF is an image to training: these join the splits
            draw_photo(folder.name, 40 + 7 * i, 30, rng).convert("P").save(folder / f"anim_{i}.gif")
    recipe = folder_recipe(tmp, root).read_text().replace("[data]\n", "[data]\ncrop_pct = 0.5\n")
    (tmp / "recipe.toml").write_text(recipe)
    assert main(["run", str(tmp / "recipe.toml"), "--threads", "1"]) == 0
    (run_dir,) = (tmp / "runs" / "photos").iterdir()
    return run_dir, root


def _probabilities(rows: list[dict], classes: list[str]) -> torch.Tensor:
    """``(N, classes)`` from ``vitkit predict --json`` rows or ``/predict`` entries (top-k of all classes)."""
    return torch.tensor([[dict((t["label"], t["probability"]) for t in r["topk"])[c] for c in classes] for r in rows])


def test_i33_3_tta_crops_gives_evals_tta_probabilities_in_predict_serve_and_the_api(folder_run, cli, tmp_path):
    run_dir, root = folder_run
    split = json.loads((run_dir / "split.json").read_text())
    classes, files = split["classes"], [root / rel for rel, _ in split["test"]]
    targets = torch.tensor([classes.index(label) for _, label in split["test"]])

    code, _, err = cli("eval", run_dir, "--tta", "crops")  # eval's TTA path
    assert code == 0, err
    evaluation = json.loads((run_dir / "eval_test.json").read_text())

    crops = vitkit.load(run_dir, device="cpu", tta="crops")
    api = torch.tensor([[dict(p.topk)[c] for c in classes] for p in crops.predict(files, topk=len(classes))])
    plain = vitkit.load(run_dir, device="cpu")
    untouched = torch.tensor([[dict(p.topk)[c] for c in classes] for p in plain.predict(files, topk=len(classes))])
    code, _, err = cli("predict", run_dir, *files, "--tta", "crops", "--topk", 3, "--json", tmp_path / "p.json")
    assert code == 0, err
    by_cli = _probabilities(json.loads((tmp_path / "p.json").read_text())["results"], classes)

    from .test_serve import Server, call

    server = Server(str(run_dir), "--port", "0", "--tta", "crops", "--device", "cpu")
    try:
        answers = [call(f"{server.url}predict?topk=3", f.read_bytes(), "image/jpeg") for f in files]
    finally:
        server.stop()
    assert [status for status, _, _ in answers] == [200] * len(files)
    served = _probabilities([json.loads(body)["predictions"][0] for _, _, body in answers], classes)

    assert torch.allclose(by_cli, api, rtol=0, atol=1e-6)
    assert torch.allclose(served, api, rtol=0, atol=1e-6)
    assert (api - untouched).abs().max() > 1e-4  # the corner crops are other pixels than the centre
    # eval scores its TTA probabilities: the same accuracy and ECE from predict's
    assert float((api.argmax(1) == targets).double().mean()) == pytest.approx(evaluation["test_acc_tta"], abs=1e-9)
    assert expected_calibration_error(api, targets) == pytest.approx(evaluation["test_ece_tta"], abs=1e-6)
    # ... and its views: the centre crop and the four corners of the 32 px base, as eval's loader gives it
    views = crops.to_input([crops.view(f) for f in files[:2]], "crops")
    assert views.shape == (5, 2, 3, 16, 16)
    assert torch.equal(views[0], plain.to_input([plain.view(f) for f in files[:2]]))
    assert all(not torch.equal(views[0], views[k]) for k in range(1, 5))


def test_i33_8_predict_reads_the_gifs_training_read(folder_run, cli, tmp_path):
    run_dir, root = folder_run
    split = json.loads((run_dir / "split.json").read_text())
    trained_on = [rel for name in ("train", "val", "test") for rel, _ in split[name] if rel.endswith(".gif")]
    assert len(trained_on) == 6  # the folder reader took every GIF
    gifs = sorted(root.rglob("*.gif"))
    code, _, err = cli("predict", run_dir, *gifs, "--json", tmp_path / "p.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    assert [r["error"] for r in rows] == [None] * 6
    assert all(r["label"] in split["classes"] for r in rows)


def _no_label_model(path) -> None:
    """A multi-label ``model.safetensors`` (3 classes, thresholds 0.5) whose head bias is -20: every sigmoid
    about 2e-9, so no image has a label above its threshold."""
    from vitkit.engine.build import build_model
    from vitkit.recipe import recipe_from_dict
    from vitkit.runs.checkpoint import save_safetensors

    spec = {"name": "vit_nano_patch4_16", "depth": 1}
    model = build_model(recipe_from_dict({"name": "ml", "model": spec}), 3, 3, pretrained=False)
    with torch.no_grad():
        model.head.bias.fill_(-20.0)
    data = {"classes": ["blue", "green", "red"], "in_chans": 3, "img_size": 16, "crop_pct": 0.875,
            "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3, "thresholds": [0.5] * 3}  # fmt: skip
    save_safetensors(model, path, {"model": spec, "data": data, "temperature": 1.0})


def test_i33_5_serve_answers_an_image_with_no_label_above_its_threshold_as_predict(cli, tmp_path):
    from .test_serve import Server, call

    model, image = tmp_path / "model.safetensors", tmp_path / "grey.png"
    _no_label_model(model)
    Image.new("RGB", (32, 32), (128, 128, 128)).save(image)
    code, out, err = cli("predict", model, image, "--json", tmp_path / "p.json")
    assert code == 0, err
    assert "(no label above its threshold)" in out
    (row,) = json.loads((tmp_path / "p.json").read_text())["results"]
    assert (row["label"], row["probability"], row["topk"]) == (None, None, [])

    server = Server(str(model), "--port", "0")
    try:
        status, kind, body = call(server.url + "predict", image.read_bytes(), "image/png")
    finally:
        server.stop()
    assert status == 200, body
    assert kind == "application/json"
    assert json.loads(body) == {"predictions": [{"label": None, "probability": None, "topk": []}]}
