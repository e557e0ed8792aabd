"""Plant copies and flipped labels in a generated folder, run ``vitkit audit`` on it, and report what it found.

Planted: ``--copies`` train images copied into val/test four ways (the same file; a PNG re-save; resized to
70% and re-saved as JPEG quality 60; 4% cropped off each side), and ``--flip`` of the labels moved to
another class folder. Prints recall and precision of duplicates (groups) and label errors, and the
audit's wall time (command start to exit, image decoding included).

    python benchmarks/audit_planted.py OUT --kind photos --per-class 250
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from make_photo_folder import make_photo_folder  # noqa: E402 (benchmarks/ is the script's folder)
from PIL import Image

KINDS = ("exact", "png", "resized", "cropped")


def plant(root: Path, copies: int, seed: int = 0) -> dict[str, str]:
    """``{copy: original}``: ``copies`` train images copied into val or test, the four kinds in turn."""
    rng = random.Random(seed)
    train = sorted((root / "train").rglob("*.jpg"))
    planted = {}
    for n, src in enumerate(rng.sample(train, copies)):
        cls, kind = src.parent.name, KINDS[n % 4]
        split = ("test", "val")[n % 2]
        dst = root / split / cls / f"planted_{n:03d}_{kind}.{'png' if kind == 'png' else 'jpg'}"
        img = Image.open(src)
        if kind == "exact":
            shutil.copy(src, dst)
        elif kind == "png":
            img.save(dst)
        elif kind == "resized":
            img.resize((img.width * 7 // 10, img.height * 7 // 10), Image.Resampling.BILINEAR).save(dst, quality=60)
        else:
            dx, dy = img.width // 25, img.height // 25
            img.crop((dx, dy, img.width - dx, img.height - dy)).save(dst, quality=85)
        planted[dst.relative_to(root).as_posix()] = src.relative_to(root).as_posix()
    return planted


def flip(root: Path, share: float, planted: dict[str, str], seed: int = 0) -> dict[str, str]:
    """``{moved file: true class}``: ``share`` of the images not involved in a copy, moved to another class."""
    rng = random.Random(seed + 1)
    involved = set(planted) | set(planted.values())
    files = [p for p in sorted(root.rglob("*.jpg")) if p.relative_to(root).as_posix() not in involved]
    classes = sorted(p.name for p in (root / "train").iterdir())
    flipped = {}
    for n, src in enumerate(rng.sample(files, round(share * len(files)))):
        wrong = rng.choice([c for c in classes if c != src.parent.name])
        dst = src.parent.parent / wrong / f"flipped_{n:03d}.jpg"
        src.rename(dst)
        flipped[dst.relative_to(root).as_posix()] = src.parent.name
    return flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (replaced)")
    parser.add_argument("--per-class", type=int, default=250)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    root = make_photo_folder(out / "photos", "split", classes=args.classes, per_class=args.per_class, seed=args.seed)
    planted = plant(root, args.copies, args.seed)
    flipped = flip(root, args.flip, planted, args.seed)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "vitkit", "audit", str(root), "--out", str(out / "audit")],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    result = json.loads((out / "audit" / "audit.json").read_text())
    groups = result["duplicates"]
    found = sum(any(c in g["paths"] and s in g["paths"] for g in groups) for c, s in planted.items())
    true_images = set(planted) | set(planted.values())
    flagged = [p for g in groups for p in g["paths"]]
    right = sum(p in true_images for p in flagged)
    issues = {i["path"] for i in result["label_issues"]}
    hits = len(issues & set(flipped))
    images = sum(result["split_sizes"].values())
    print(f"{images} images, wall {wall:.1f} s (vitkit audit, command start to exit)")
    print(
        f"duplicates: recall {found}/{len(planted)} = {found / len(planted):.3f}, precision {right}/{len(flagged)} "
        f"images in {len(groups)} groups = {right / max(1, len(flagged)):.3f}"
    )
    print(
        f"label errors: recall {hits}/{len(flipped)} = {hits / max(1, len(flipped)):.3f}, precision {hits}/"
        f"{len(issues)} = {hits / max(1, len(issues)):.3f} ({result['label_check'].get('how')})"
    )


if __name__ == "__main__":
    main()
