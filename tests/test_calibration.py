"""Issue 24 parts 2-4: calibration (temperature scaling, ECE, reliability), the mistakes that matter
(most confused pairs, top losses) and test-time augmentation, on a tiny digits run and a photo folder."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitkit
from vitkit.data import BatchTransform
from vitkit.data.datasets import Digits
from vitkit.runs.checkpoint import load_checkpoint, load_safetensors, save_checkpoint, save_safetensors

from .conftest import TINY_DIGITS
from .photos import folder_recipe, tiny_folder


@pytest.fixture
def vitkit_cli(cli, monkeypatch):
    """``vitkit ARGS`` in this process (``vitkit.cli.main``, 120 columns): exit code, stdout and stderr as
    a ``CompletedProcess``."""
    monkeypatch.setenv("COLUMNS", "120")

    def run(*args) -> subprocess.CompletedProcess:
        code, out, err = cli(*args)
        return subprocess.CompletedProcess([str(a) for a in args], code, out, err)

    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("runs")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY_DIGITS)
    assert main(["run", str(recipe), "--set", f'output.dir="{out}"']) == 0
    (path,) = (out / "tiny").iterdir()
    return path


@pytest.fixture(scope="module")
def test_split():
    return Digits(img_size=8).load().test


def read_json(path):
    return json.loads(path.read_text())


def logits_of(predictor, images: torch.Tensor) -> torch.Tensor:
    """The model's raw logits for digits images ``(B, 1, 8, 8)`` through the evaluation transform."""
    transform = BatchTransform(predictor.img_size, predictor.data["mean"], predictor.data["std"])
    with torch.no_grad():
        return predictor.model(transform(images, torch.zeros(len(images), dtype=torch.long))[0]).float()


# ------------------------------------------------------------------------------------- 3: calibration


def test_i24_3_temperature_scaling_lowers_ece_of_an_overconfident_model():
    from vitkit.evaluation.calibration import ECE_BINS, expected_calibration_error, fit_temperature

    g = torch.Generator().manual_seed(0)
    n, classes = 4000, 10
    # a calibrated model: the labels are drawn from its softmax
    logits = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]
    overconfident = logits * 4.0  # the same ranking, probabilities pushed towards 0 and 1
    val, test = slice(0, n // 2), slice(n // 2, n)
    temperature = fit_temperature(overconfident[val], labels[val])
    assert 3.0 < temperature < 5.5  # recovers the factor 4
    before = expected_calibration_error(overconfident[test].softmax(1), labels[test])
    after = expected_calibration_error((overconfident[test] / temperature).softmax(1), labels[test])
    assert before > 0.15 and after < 0.05 and after < before / 3, (before, after)
    # accuracy (the argmax) is unchanged
    assert torch.equal(overconfident[test].argmax(1), (overconfident[test] / temperature).argmax(1))
    # ECE of a split counted by hand over ECE_BINS bins: all images at confidence 0.95, 60% right
    probs = torch.tensor([[0.95, 0.05]] * 10)
    assert ECE_BINS == 15
    assert expected_calibration_error(probs, torch.tensor([0] * 6 + [1] * 4)) == pytest.approx(0.35)


def test_i24_3_summary_report_and_weights_hold_the_temperature(run_dir):
    summary = read_json(run_dir / "summary.json")
    assert {"test_ece", "test_ece_calibrated", "temperature", "val_ece", "val_ece_calibrated"} <= set(summary)
    temperature = summary["temperature"]
    assert temperature != 1.0 and 0.05 <= temperature <= 20
    assert 0 <= summary["test_ece"] <= 1 and 0 <= summary["test_ece_calibrated"] <= 1
    assert summary["val_ece_calibrated"] <= summary["val_ece"] + 0.02  # fitted on val: no worse there (NLL, not ECE)
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["temperature"] == temperature
    assert load_safetensors(run_dir / "model.safetensors")[1]["temperature"] == temperature
    report = read_json(run_dir / "report_test.json")
    assert report["calibration"]["ece"] == summary["test_ece"] and report["calibration"]["bins"] == 15
    for name in ("reliability.png", "reliability_val.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG", name
    page = (run_dir / "report.html").read_text()
    assert "Calibration" in page and f"{summary['test_ece']:.4f}" in page and "15 equal-width" in page


def test_i24_3_predict_gives_the_calibrated_probabilities(run_dir, test_split, tmp_path, vitkit_cli):
    temperature = load_checkpoint(run_dir / "checkpoints" / "best.pt")["temperature"]
    images = test_split.images[:12]
    for source in (run_dir, run_dir / "model.safetensors"):
        predictor = vitkit.load(source, device="cpu")
        expected = (logits_of(predictor, images) / temperature).softmax(1)
        got = predictor.predict(images, topk=10)
        for p, row in zip(got, expected, strict=True):
            by_label = dict(p.topk)
            assert [by_label[str(c)] for c in range(10)] == pytest.approx(row.tolist(), abs=1e-5)
        # and not the raw ones: T != 1 moves them
        assert not torch.allclose(expected, logits_of(predictor, images).softmax(1), atol=1e-3)
    # the command line: files of the same images
    folder = tmp_path / "images"
    for i in range(12):
        (folder / str(int(test_split.labels[i]))).mkdir(parents=True, exist_ok=True)
        pixels = (images[i, 0] * 255).round().byte().numpy()
        Image.fromarray(pixels).save(folder / str(int(test_split.labels[i])) / f"{i:02d}.png")
    proc = vitkit_cli("predict", run_dir, folder, "--topk", 10, "--json", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr
    predictor = vitkit.load(run_dir, device="cpu")
    files = [folder / str(int(test_split.labels[i])) / f"{i:02d}.png" for i in range(12)]
    # a file is resized whole as its hf export says (timm's squash: PIL), so its raw logits come from its view
    views = torch.stack([predictor.view(f) for f in files]).float() / 255
    expected = {
        str(f): row for f, row in zip(files, (logits_of(predictor, views) / temperature).softmax(1), strict=True)
    }
    for result in read_json(tmp_path / "p.json")["results"]:
        by_label = {t["label"]: t["probability"] for t in result["topk"]}
        row = expected[result["source"]]
        assert [by_label[str(c)] for c in range(10)] == pytest.approx(row.tolist(), abs=1e-5)


def test_i24_3_a_run_without_temperature_loads_as_one(run_dir, test_split, tmp_path, vitkit_cli):
    """Runs written before calibration: no ``temperature`` in best.pt or model.safetensors."""
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    state = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    del state["temperature"]
    save_checkpoint(state, old / "checkpoints" / "best.pt")
    weights, meta = load_safetensors(run_dir / "model.safetensors")
    del meta["temperature"]
    save_safetensors(weights, old / "model.safetensors", meta)
    images = test_split.images[:8]
    for source in (old, old / "model.safetensors"):
        predictor = vitkit.load(source, device="cpu")
        assert predictor.temperature == 1.0
        raw = logits_of(predictor, images).softmax(1)
        assert [p.probability for p in predictor.predict(images, topk=1)] == pytest.approx(
            raw.max(1).values.tolist(), abs=1e-6
        )
    proc = vitkit_cli("eval", old / "checkpoints" / "best.pt")
    assert proc.returncode == 0, proc.stderr
    report = read_json(old / "report_test.json")
    assert report["calibration"]["temperature"] == 1.0
    assert report["calibration"]["ece"] == report["calibration"]["ece_calibrated"]


def test_i24_3_eval_and_export_use_the_temperature(run_dir, tmp_path, vitkit_cli):
    summary = read_json(run_dir / "summary.json")
    proc = vitkit_cli("eval", run_dir)
    assert proc.returncode == 0, proc.stderr
    evaluation = read_json(run_dir / "eval_test.json")
    assert evaluation["test_acc"] == pytest.approx(summary["test_acc"])  # argmax: unchanged by calibration
    assert evaluation["temperature"] == summary["temperature"]
    assert evaluation["test_ece"] == pytest.approx(summary["test_ece"], abs=1e-6)
    assert evaluation["test_ece_calibrated"] == pytest.approx(summary["test_ece_calibrated"], abs=1e-6)

    out = tmp_path / "model.torchscript.pt"
    proc = vitkit_cli("export", run_dir, "--format", "torchscript", "--out", out)
    assert proc.returncode == 0, proc.stderr
    extra = {"vitkit.json": ""}
    graph = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["vitkit.json"])
    assert meta["temperature"] == summary["temperature"] and meta["logits_divided_by_temperature"] is True
    predictor = vitkit.load(run_dir, device="cpu")
    x = torch.rand(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(graph(x), predictor.model(x) / summary["temperature"], atol=1e-5)


# ------------------------------------------------------------------------- 2: the mistakes that matter


def test_i24_2_confused_pairs_and_top_losses_are_written(run_dir, test_split):
    report = read_json(run_dir / "report_test.json")
    matrix = report["confusion"]
    off = sorted(
        ((matrix[t][p], t, p) for t in range(10) for p in range(10) if t != p and matrix[t][p]), key=lambda x: -x[0]
    )
    pairs = report["confused_pairs"]
    assert pairs and len(pairs) == min(10, len(off))
    assert [p["count"] for p in pairs] == [c for c, _, _ in off[: len(pairs)]]
    # every example of a pair is an image of the true class that the model put in the predicted one
    predictor = vitkit.load(run_dir, device="cpu")
    predicted = logits_of(predictor, test_split.images).argmax(1)
    for pair in pairs:
        assert 1 <= len(pair["examples"]) <= min(4, pair["count"])
        for example in pair["examples"]:
            i = int(example.removeprefix("test[").removesuffix("]"))
            assert str(int(test_split.labels[i])) == pair["true"] and str(int(predicted[i])) == pair["predicted"]
    losses = report["top_losses"]
    assert len(losses) == 32 and [x["loss"] for x in losses] == sorted((x["loss"] for x in losses), reverse=True)
    temperature = read_json(run_dir / "summary.json")["temperature"]
    probs = (logits_of(predictor, test_split.images) / temperature).softmax(1)
    every = -probs[torch.arange(len(probs)), test_split.labels].log()
    assert losses[0]["loss"] == pytest.approx(float(every.max()), rel=1e-4)
    first = int(losses[0]["example"].removeprefix("test[").removesuffix("]"))
    assert losses[0]["given"] == str(int(test_split.labels[first]))
    assert losses[0]["probability"] == pytest.approx(float(probs[first].max()), abs=1e-5)
    for name in ("confused.png", "top_losses.png"):
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG", name
    page = (run_dir / "report.html").read_text()
    assert "most confused" in page and f"<td>{pairs[0]['count']}</td>" in page


def test_i24_2_a_folder_run_names_the_files_it_confuses(tmp_path, vitkit_cli):
    root = tiny_folder(tmp_path / "photos", per_class=12)
    recipe = folder_recipe(tmp_path, root)
    proc = vitkit_cli("run", recipe)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    report = read_json(run_dir / "report_test.json")
    assert sum(p["count"] for p in report["confused_pairs"]) == report["count"] - round(report["acc"] * report["count"])
    # named as split.json names them: relative to the data root, in the folder of their given class
    named = [e for p in report["confused_pairs"] for e in p["examples"]] + [x["example"] for x in report["top_losses"]]
    assert named and all((root / path).is_file() for path in named), named
    for pair in report["confused_pairs"]:
        assert all(Path(path).parent.name == pair["true"] for path in pair["examples"])
    for loss in report["top_losses"]:
        assert Path(loss["example"]).parent.name == loss["given"]
    test_files = {path for path, _ in read_json(run_dir / "split.json")["test"]}
    assert set(named) <= test_files
    page = (run_dir / "report.html").read_text()
    assert all(path in page for path in report["confused_pairs"][0]["examples"])
    summary = read_json(run_dir / "summary.json")
    assert {"test_ece", "test_ece_calibrated", "temperature"} <= set(summary)


# ------------------------------------------------------------------------ 4: test-time augmentation


def test_i24_4_eval_tta_reports_accuracy_with_and_without(run_dir, test_split, vitkit_cli):
    proc = vitkit_cli("eval", run_dir, "--tta", "flip")
    assert proc.returncode == 0, proc.stderr
    evaluation = read_json(run_dir / "eval_test.json")
    assert evaluation["tta"] == "flip" and {"test_acc", "test_acc_tta"} <= set(evaluation)
    assert re.search(rf"test_acc_tta\s+│\s+{evaluation['test_acc_tta']:.4f}", proc.stdout), proc.stdout
    # by hand: the mean of the calibrated probabilities of each image and its mirror image
    predictor = vitkit.load(run_dir, device="cpu")
    temperature = predictor.temperature
    images = test_split.images
    mean = ((logits_of(predictor, images) / temperature).softmax(1)) + (
        (logits_of(predictor, images.flip(-1)) / temperature).softmax(1)
    )
    by_hand = float((mean.argmax(1) == test_split.labels).float().mean())
    assert evaluation["test_acc_tta"] == pytest.approx(by_hand, abs=1.5 / len(images))
    assert evaluation["test_acc"] == pytest.approx(read_json(run_dir / "summary.json")["test_acc"])
    report = read_json(run_dir / "report_test.json")
    assert report["tta"] == {
        "mode": "flip",
        "acc": evaluation["test_acc_tta"],
        "acc_without": evaluation["test_acc"],
        "ece": evaluation["test_ece_tta"],
    }
    page = (run_dir / "report.html").read_text()
    assert f"test-time augmentation (flip): accuracy {evaluation['test_acc_tta']:.4f}" in page


def test_i24_4_predict_tta_averages_the_views(run_dir, test_split, tmp_path, vitkit_cli):
    images = test_split.images[:10]
    plain = vitkit.load(run_dir, device="cpu")
    flipped = vitkit.load(run_dir, device="cpu", tta="flip")
    t = plain.temperature
    expected = ((logits_of(plain, images) / t).softmax(1) + (logits_of(plain, images.flip(-1)) / t).softmax(1)) / 2
    got = flipped.predict(images, topk=10)
    for p, row in zip(got, expected, strict=True):
        by_label = dict(p.topk)
        assert [by_label[str(c)] for c in range(10)] == pytest.approx(row.tolist(), abs=1e-5)
    crops = vitkit.load(run_dir, device="cpu", tta="crops")
    views = crops.to_input([crops.view(i) for i in images], "crops")
    assert views.shape == (5, 10, 1, 16, 16)
    assert torch.equal(views[0], plain.to_input([plain.view(i) for i in images]))  # view 0: the eval view
    folder = tmp_path / "images" / "3"
    folder.mkdir(parents=True)
    Image.fromarray((images[0, 0] * 255).round().byte().numpy()).save(folder / "a.png")
    proc = vitkit_cli("predict", run_dir, folder, "--tta", "crops", "--json", tmp_path / "p.json")
    assert proc.returncode == 0, proc.stderr
    (result,) = read_json(tmp_path / "p.json")["results"]
    assert result["error"] is None and 0 < result["probability"] <= 1
    proc = vitkit_cli("predict", run_dir, folder, "--tta", "mirror")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--tta" in proc.stderr
