"""Multi-label images (issue #26, part 4): a ``path,labels`` CSV trains with a sigmoid loss, reports mAP,
per-class F1 and exact match at thresholds chosen on val, and ``vitkit predict`` prints every label above
its threshold."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tomllib
import torch
from PIL import Image, ImageDraw

from .photos import folder_recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def multilabel_folder(root: Path, images: int = 90, seed: int = 0) -> Path:
    """Grey 32 px photos, each with one to three coloured squares; an image's labels are its colours
    (``labels.csv``: ``path,labels`` with ``a;b``)."""
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True)
    rows = ["path,labels"]
    for n in range(images):
        names = sorted(rng.sample(sorted(COLOURS), rng.randint(1, 3)))
        img = Image.new("RGB", (32, 32), (128, 128, 128))
        draw = ImageDraw.Draw(img)
        for name in names:
            x, y = rng.randint(0, 20), rng.randint(0, 20)
            draw.rectangle([x, y, x + 11, y + 11], fill=COLOURS[name])
        img.save(root / "img" / f"{n:03d}.png")
        rows.append(f"img/{n:03d}.png,{';'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


ML_RECIPE = """
[loss]
name = "LOSS"
[optimizer]
name = "adamw"
lr = 3e-3
[train]
epochs = 8
"""


def _recipe(tmp_path: Path, root: Path, loss: str = "bce") -> Path:
    text = folder_recipe(tmp_path, root).read_text().replace("[train]\nepochs = 1\n", "")
    path = tmp_path / "ml.toml"
    path.write_text(text + ML_RECIPE.replace("LOSS", loss))
    return path


@pytest.mark.slow
def test_i26_4_multilabel_folder_trains_reports_map_and_predicts_labels_above_thresholds(cli, tmp_path):
    root = multilabel_folder(tmp_path / "photos")
    code, out, err = cli("run", _recipe(tmp_path, root))
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    split = json.loads((run_dir / "split.json").read_text())
    assert split["classes"] == ["blue", "green", "red"]
    assert all(isinstance(labels, list) for _, labels in split["test"])  # every label of each image kept
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "report_test.json").read_text())
    assert summary["multi_label"] is True and summary["test_map"] == report["map"]
    assert summary["test_exact_match"] == report["exact_match"] and "test_top5" not in summary
    assert [r["class"] for r in report["per_class"]] == ["blue", "green", "red"]
    assert all({"ap", "f1", "precision", "recall", "threshold", "support"} <= set(r) for r in report["per_class"])
    # colours are easy: far above the positive rate (~0.67), which is what a model that learned nothing scores
    assert report["map"] > 0.85, report
    assert "mAP" in out

    # predict: every label whose sigmoid reaches its threshold (chosen on val), and only those
    code, out, err = cli("predict", run_dir, root / "img", "--json", tmp_path / "p.json", "--out", tmp_path / "p.png")
    assert code == 0, err
    assert "labels above their thresholds" in out
    result = json.loads((tmp_path / "p.json").read_text())
    thresholds = result["thresholds"]
    assert sorted(thresholds) == ["blue", "green", "red"] and thresholds == dict(
        zip(["blue", "green", "red"], report["thresholds"], strict=True)
    )
    truth = {f"img/{line.split(',')[0][4:]}": set(line.split(",")[1].split(";"))
             for line in (root / "labels.csv").read_text().splitlines()[1:]}  # fmt: skip
    hits = 0
    for row in result["results"]:
        labels = {t["label"] for t in row["topk"]}
        assert all(t["probability"] >= thresholds[t["label"]] for t in row["topk"])
        hits += labels == truth[f"img/{Path(row['source']).name}"]
    assert hits / len(result["results"]) > 0.6  # exact label sets for most images (train + val + test)
    assert (tmp_path / "p.png").stat().st_size > 0

    # vitkit eval reads the thresholds back and scores the test split as the run did
    code, _, err = cli("eval", run_dir)
    assert code == 0, err
    again = json.loads((run_dir / "report_test.json").read_text())
    assert again["thresholds"] == report["thresholds"] and abs(again["map"] - report["map"]) < 1e-6


def test_i26_4_asl_trains_a_multilabel_folder(cli, tmp_path):
    root = multilabel_folder(tmp_path / "photos", images=45)
    recipe = _recipe(tmp_path, root, "asl")
    code, _, err = cli("run", recipe, "--set", "train.epochs=1")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    assert 0.0 < json.loads((run_dir / "summary.json").read_text())["test_map"] <= 1.0


def test_i26_4_multilabel_data_with_softmax_cross_entropy_is_a_one_line_error(cli, tmp_path):
    root = multilabel_folder(tmp_path / "photos", images=30)
    code, _, err = cli("run", folder_recipe(tmp_path, root))
    assert code == 2
    assert 'set loss = "bce" or loss = "asl"' in err and "Traceback" not in err
    code, _, err = cli("run", _recipe(tmp_path, root), "--set", "augment.mixup=0.8")
    assert code == 2 and "augment.mixup and augment.cutmix are not supported" in err and "Traceback" not in err


def test_i26_4_asymmetric_loss_is_bce_without_focusing_and_down_weights_easy_negatives():
    from vitkit.losses import asl, bce

    torch.manual_seed(0)
    logits, targets = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    plain = asl(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)(logits, targets)
    assert torch.allclose(plain, bce()(logits, targets) * 4, atol=1e-5)  # BCE averages over classes too
    easy_negative = torch.tensor([[-3.0]]), torch.tensor([[0.0]])  # p = 0.047: under the clip, no loss
    assert asl()(*easy_negative) == 0 and asl(gamma_neg=0.0, clip=0.0)(*easy_negative) > 0.04
    hard_negative = torch.tensor([[1.0]]), torch.tensor([[0.0]])  # p = 0.73: weighed (p - clip)^4 = 0.21
    assert 0.15 < asl()(*hard_negative) / asl(gamma_neg=0.0, clip=0.0)(*hard_negative) < 0.25


def test_i26_4_thresholds_chosen_on_val_give_the_best_f1_per_class():
    from vitkit.evaluation.multilabel_report import choose_thresholds

    probs = torch.tensor([[0.9, 0.2], [0.7, 0.3], [0.4, 0.6], [0.1, 0.1]])
    targets = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 0]]).float()
    (t0, t1) = choose_thresholds(probs, targets)
    assert 0.1 < t0 < 0.4  # all three positives above it, the negative below: F1 = 1
    assert t1 == 0.5  # no positive in val: the default


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
def test_i26_4_hf_dataset_with_a_list_of_labels_trains_multi_label(cli, tmp_path, streaming):
    import datasets

    datasets.disable_progress_bars()
    root = multilabel_folder(tmp_path / "photos", images=45)
    rows = [line.split(",") for line in (root / "labels.csv").read_text().splitlines()[1:]]
    names = sorted(COLOURS)
    features = datasets.Features({"image": datasets.Image(), "tags": datasets.List(datasets.ClassLabel(names=names))})
    table = {
        "image": [str(root / path) for path, _ in rows],
        "tags": [[names.index(n) for n in labels.split(";")] for _, labels in rows],
    }
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(tmp_path / "hfds"))
    recipe = _recipe(tmp_path, root)
    text = recipe.read_text().replace('dataset = "imagefolder"', 'dataset = "hf"\nlabel_key = "tags"')
    recipe.write_text(text.replace(f'root = "{root.as_posix()}"', f'root = "{(tmp_path / "hfds").as_posix()}"'))
    code, _, err = cli("run", recipe, "--set", "train.epochs=1", "--set", f"data.streaming={str(streaming).lower()}")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    report = json.loads((run_dir / "report_test.json").read_text())
    assert report["count"] == summary["split_sizes"]["test"] and sum(summary["split_sizes"].values()) == 45
    assert summary["multi_label"] is True and [r["class"] for r in report["per_class"]] == names
    counts = summary["data"]["class_counts"]
    total = {n: sum(counts[s][n] for s in counts) for n in names}  # every label of every row counted
    assert total == {n: sum(n in labels.split(";") for _, labels in rows) for n in names}


@pytest.mark.slow
def test_i26_4_multilabel_shards_round_trip_and_train(cli, tmp_path):
    root = multilabel_folder(tmp_path / "photos", images=45)
    shards = tmp_path / "shards"
    code, _, err = cli("shards", root, "--out", shards)
    assert code == 0, err
    info = json.loads((shards / "_info.json").read_text())
    assert sum(s["num_samples"] for s in info["splits"].values()) == 45

    from vitkit.data.shards import read_shard

    truth = {f"img/{line.split(',')[0][4:]}": line.split(",")[1].split(";")
             for line in (root / "labels.csv").read_text().splitlines()[1:]}  # fmt: skip
    seen = 0
    for tar in sorted(shards.glob("*.tar")):
        for sample in read_shard(str(tar)):
            meta = json.loads(sample["json"])
            assert "cls" not in sample and meta["class"] == truth[meta["path"]]
            assert [info["classes"][int(i)] for i in sample["labels"].decode().split(";")] == meta["class"]
            seen += 1
    assert seen == 45
    text = _recipe(tmp_path, root).read_text().replace('dataset = "imagefolder"', 'dataset = "webdataset"')
    text = text.replace(f'root = "{root.as_posix()}"', f'root = "{shards.as_posix()}"')
    text = text.replace("batch_size = 8", 'batch_size = 8\ntrain = "train-000000.tar"\nval = "val-000000.tar"\n'
                        'test = "test-000000.tar"')  # fmt: skip
    (tmp_path / "wds.toml").write_text(text)
    code, _, err = cli("run", tmp_path / "wds.toml", "--set", "train.epochs=1")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["multi_label"] is True and summary["split_sizes"]["test"] == info["splits"]["test"]["num_samples"]
    assert 0.0 < summary["test_map"] <= 1.0


def test_i26_4_vitkit_run_dir_chooses_bce_for_a_multilabel_folder(cli, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: the from-scratch recipe
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    root = multilabel_folder(tmp_path / "photos", images=30)
    code, out, err = cli("run", root, "--dry-run")
    assert code == 0, err
    recipe = tomllib.loads(out)
    assert recipe["loss"] == {"name": "bce"} and recipe["data"]["labels"] == "labels.csv"
    assert "(csv, 3 classes, 30 images" in out.splitlines()[0]
