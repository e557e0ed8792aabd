"""Issue #24 part 1: ``vitkit audit`` finds planted copies, leaks and flipped labels; ``data.exclude`` applies
its fix plan; a run on a leaky folder says so beside its test accuracy."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import ROOT
from .photos import draw_photo, folder_recipe, make_photo_folder, tiny_folder

COLOURS = {"red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 200), "yellow": (210, 200, 40)}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VITKIT_DEBUG": ""}


def vitkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
    )


def tinted(colour: tuple[int, int, int], rng: random.Random) -> Image.Image:
    """A photo-like image of one class: its tint, noise, and a distractor box of a random colour."""
    w, h = rng.randint(48, 96), rng.randint(48, 96)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 25, (h, w, 3))
    img = np.clip(np.array(colour, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    x, y = rng.randint(0, w // 2), rng.randint(0, h // 2)
    img[y : y + h // 3, x : x + w // 3] = [rng.randint(0, 255) for _ in range(3)]
    return Image.fromarray(img)


def tinted_folder(root: Path, per_class: int, splits: dict[str, float] | None = None, seed: int = 0) -> Path:
    """Four clearly separable classes (by tint): ``root/<class>/`` or, with ``splits`` (shares),
    ``root/<split>/<class>/``."""
    rng = random.Random(seed)
    for name, colour in COLOURS.items():
        for i in range(per_class):
            split = ""
            if splits:
                cut, acc = i / per_class, 0.0
                for split, share in splits.items():  # noqa: B007 (the last one reached is kept)
                    acc += share
                    if cut < acc:
                        break
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            tinted(colour, rng).save(folder / f"img_{i:03d}.jpg", quality=90)
    return root


SHAPES = ("disc", "square", "triangle", "ring")


def photo_split_folder(root: Path) -> Path:
    """4 classes of 40 generated photos (48-160 px), split 28/6/6 into train/val/test folders."""
    return make_photo_folder(root, "split", classes=4, per_class=40, min_size=48, max_size=160)


def plant_copies(root: Path) -> dict[str, tuple[str, str]]:
    """Copies of train images in val/test: ``{copy: (original, kind)}`` (paths relative to ``root``)."""
    planted: dict[str, tuple[str, str]] = {}
    for n, name in enumerate(SHAPES):
        src = f"train/{name}/img_{n:04d}.jpg"
        shutil.copy(root / src, root / f"test/{name}/exact_copy.jpg")  # the same file twice
        planted[f"test/{name}/exact_copy.jpg"] = (src, "exact")
        src = f"train/{name}/img_{n + 7:04d}.jpg"
        Image.open(root / src).save(root / f"val/{name}/resaved.png")  # the same pixels as a PNG
        planted[f"val/{name}/resaved.png"] = (src, "exact")
        src = f"train/{name}/img_{n + 14:04d}.jpg"
        img = Image.open(root / src)
        small = img.resize((img.width * 7 // 10, img.height * 7 // 10), Image.Resampling.BILINEAR)
        small.save(root / f"test/{name}/resized.jpg", quality=60)  # resized and re-compressed
        planted[f"test/{name}/resized.jpg"] = (src, "near")
        src = f"train/{name}/img_{n + 21:04d}.jpg"
        img = Image.open(root / src)
        dx, dy = img.width // 25, img.height // 25
        img.crop((dx, dy, img.width - dx, img.height - dy)).save(root / f"val/{name}/cropped.jpg", quality=85)
        planted[f"val/{name}/cropped.jpg"] = (src, "near")  # 4% cut off each side
    return planted


def test_i24_1_audit_finds_planted_copies_and_leaks(tmp_path: Path) -> None:
    root = photo_split_folder(tmp_path / "photos")
    planted = plant_copies(root)
    done = vitkit("audit", str(root), "--no-labels", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "audit.json").read_text())
    groups = result["duplicates"]
    found = {}
    for group in groups:
        assert group["leak"] == ("train" in group["splits"] and bool({"val", "test"} & set(group["splits"])))
        for path in group["paths"]:
            found[path] = group
    hits = [copy for copy, (src, kind) in planted.items() if copy in found and src in found[copy]["paths"]]
    recall = len(hits) / len(planted)
    true_groups = [g for g in groups if any(p in planted for p in g["paths"])]
    precision = len(true_groups) / len(groups)
    leaks = [g for g in groups if g["leak"]]
    leak_precision = sum(g in true_groups for g in leaks) / len(leaks)
    # measured at the defaults: recall 1.0 (16/16 planted copies), precision 1.0 (16/16 groups), leaks 16/16
    assert recall == 1.0 and precision == 1.0 and leak_precision == 1.0, (recall, precision, groups)
    assert all(len(g["paths"]) == 2 for g in groups)  # each a copy and its original, nothing else
    for copy, (_, kind) in planted.items():
        group = found[copy]
        assert group["kind"] == kind, (copy, group)  # a PNG re-save of a JPEG counts as exact
        assert group["leak"] is True
        assert group["splits"][0] == "train" and group["paths"][0] == planted[copy][0]  # as the user gave them
    assert result["leaks"] == {"groups": 16, "val": 8, "test": 8}
    assert "LEAK: 16 duplicate groups span train and val/test" in done.stdout
    assert result["settings"]["near_threshold"] == 14 and result["settings"]["near_correlation"] == 0.95
    html = (tmp_path / "out" / "audit.html").read_text()
    assert (
        html.count("data:image/jpeg;base64,") == sum(len(g["paths"]) for g in groups)
        and "LEAK" in html
        and "http" not in html.replace('charset="utf-8"', "")
    )
    assert result["classes"]["disc"] == {"train": 28, "val": 8, "test": 8, "total": 44}
    assert result["images"]["modes"] == {"grey": 0, "cmyk": 0, "alpha": 0}


def test_i24_1_clean_folder_has_no_exact_duplicates(tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "photos", layout="flat", per_class=12)
    rng = random.Random(7)  # three more photos, in other colour modes
    draw_photo("disc", 40, 30, rng).convert("L").save(root / "disc" / "grey.png")
    draw_photo("disc", 30, 40, rng).convert("RGBA").save(root / "disc" / "alpha.png")
    draw_photo("disc", 36, 36, rng).convert("CMYK").save(root / "disc" / "cmyk.jpg")
    (root / "disc" / "broken.jpg").write_bytes(b"not a jpeg")
    done = vitkit("audit", str(root), "--no-labels", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert [g for g in result["duplicates"] if g["kind"] == "exact"] == []
    assert result["leaks"]["groups"] == 0 and "LEAK" not in done.stdout
    assert result["images"]["modes"] == {"grey": 1, "cmyk": 1, "alpha": 1}
    assert result["unreadable"] == 1
    assert sum(result["split_sizes"].values()) == 3 * 12 + 3


@pytest.mark.slow
def test_i24_1_audit_finds_flipped_labels(tmp_path: Path) -> None:
    root = tinted_folder(tmp_path / "photos", 50)
    rng = random.Random(1)
    names = list(COLOURS)
    flipped: dict[str, str] = {}  # path as audited -> true class
    for k in range(10):  # 5% of 200 images filed under another class
        true = names[k % 4]
        wrong = names[(k % 4 + 1 + rng.randrange(3)) % 4]
        src = root / true / f"img_{k:03d}.jpg"
        src.rename(root / wrong / f"moved_{k:03d}.jpg")
        flipped[f"{wrong}/moved_{k:03d}.jpg"] = true
    plan = tmp_path / "plan.csv"
    done = vitkit("audit", str(root), "--out", str(tmp_path / "out"), "--fix-plan", str(plan), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "audit.json").read_text())
    issues = {i["path"]: i for i in result["label_issues"]}
    hits = [path for path in flipped if path in issues]
    recall, precision = len(hits) / len(flipped), len(hits) / max(1, len(issues))
    # measured at the defaults: recall 1.0 (10/10), precision 10/11 = 0.91, features 16x16 pixels
    assert recall >= 0.9 and precision >= 0.8, (recall, precision, sorted(issues))
    assert all(issues[path]["suggested"] == flipped[path] for path in hits)
    scores = [i["score"] for i in result["label_issues"]]
    assert scores == sorted(scores)  # ranked, most likely wrong first
    rows = {row["path"]: row for row in csv.DictReader(plan.open())}
    copies = {p for g in result["duplicates"] for p in g["paths"][1:]}  # dropped by the plan instead
    assert all(rows[p]["action"] == "relabel" and rows[p]["label"] == flipped[p] for p in hits if p not in copies)
    assert {rows[p]["action"] for p in hits} <= {"relabel", "drop"} and len(hits) - len(copies & set(hits)) >= 8
    assert "likely label errors" in done.stdout


@pytest.mark.slow
def test_i24_1_fix_plan_with_data_exclude_drops_and_relabels(tmp_path: Path) -> None:
    root = photo_split_folder(tmp_path / "photos")
    planted = plant_copies(root)
    plan = tmp_path / "plan.csv"
    done = vitkit(
        "audit", str(root), "--no-labels", "--out", str(tmp_path / "a"), "--fix-plan", str(plan), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(plan.open()))
    assert {r["path"] for r in rows if r["action"] == "drop"} >= set(planted)  # the train copy is kept
    rows = [r for r in rows if r["action"] != "drop" or r["path"] in planted]  # the user keeps the rest
    rows.append({"path": "train/disc/img_0027.jpg", "action": "relabel", "label": "ring", "reason": "test"})
    with plan.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "action", "label", "reason"])
        writer.writeheader()
        writer.writerows(rows)
    again = vitkit(
        "audit", str(root), "--no-labels", "--out", str(tmp_path / "b"), "--set", f"data.exclude={plan}", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    result = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert result["leaks"]["groups"] == 0 and not {p for g in result["duplicates"] for p in g["paths"]} & set(planted)
    assert result["classes"]["disc"] == {"train": 27, "val": 6, "test": 6, "total": 39}
    assert result["classes"]["ring"]["train"] == 29
    bad = tmp_path / "bad.csv"
    bad.write_text("path,action,label\ntrain/disc/nope.jpg,drop,\n")
    refused = vitkit("audit", str(root), "--no-labels", "--set", f"data.exclude={bad}", cwd=tmp_path)
    assert refused.returncode == 2 and "nope.jpg" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_i24_1_missing_cleanlab_is_one_line(tmp_path: Path) -> None:
    root = tiny_folder(tmp_path / "photos", layout="flat", per_class=6)
    block = "import sys; sys.modules['cleanlab'] = None; from vitkit.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", block, "audit", str(root), "--out", str(tmp_path / "o")],
        env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "vitkit: error: vitkit audit (label errors; --no-labels skips them) needs cleanlab, not installed: "
        'pip install "vitkit[audit]"'
    )
    assert not (tmp_path / "o").exists()  # refused before reading any image
    skipped = subprocess.run(
        [sys.executable, "-c", block, "audit", str(root), "--no-labels", "--out", str(tmp_path / "o")],
        env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads((tmp_path / "o" / "audit.json").read_text())["label_check"] == {"skipped": "--no-labels"}


@pytest.mark.slow
def test_i24_1_run_shows_leak_beside_test_accuracy(tmp_path: Path) -> None:
    root = tinted_folder(tmp_path / "photos", 12, {"train": 0.6, "val": 0.2, "test": 0.2})
    for name in COLOURS:  # two test images per class are copies of train images
        shutil.copy(root / f"train/{name}/img_000.jpg", root / f"test/{name}/copy_a.jpg")
        Image.open(root / f"train/{name}/img_001.jpg").save(root / f"test/{name}/copy_b.png")
    recipe = folder_recipe(tmp_path, root)
    done = vitkit("run", str(recipe), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if "test_acc" in line)
    assert "LEAK: 8 test and 0 val images have a copy in train" in line
    run_dir = next((tmp_path / "runs").glob("photos/*/"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["audit"]["leaks"] == {"groups": 8, "val": 0, "test": 8}
    report = (run_dir / "report.html").read_text()
    test_row = next(row for row in report.split("<tr>") if ">test_acc<" in row)
    assert "LEAK: 8 test and 0 val images have a copy in train" in test_row
    assert "<h2>Data audit</h2>" in report and "copy_a.jpg (test)" in report
    audited = vitkit("audit", str(run_dir), cwd=tmp_path)  # the run's splits (split.json), its model's embeddings
    assert audited.returncode == 0, audited.stderr
    result = json.loads((run_dir / "audit" / "audit.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    assert result["split_sizes"] == split["sizes"] and result["leaks"] == {"groups": 8, "val": 0, "test": 8}
    assert result["label_check"]["features"] == "the run's model embeddings"
