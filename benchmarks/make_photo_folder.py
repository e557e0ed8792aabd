"""Generate a folder of JPEG "photos" of varied sizes and aspect ratios for imagefolder tests and benchmarks.

Each class is a shape (disc, square, triangle, ring, cross, bars, ...) drawn at a random place, size and
colour over a noisy, randomly tinted background, so classes are learnable but not trivial. Layouts:

- ``flat``:  root/<class>/img_NNNN.jpg
- ``split``: root/train|val|test/<class>/... (``splits`` picks which folders exist)
- ``csv``:   root/images/NNNN.jpg plus root/labels.csv (path,label)

    python benchmarks/make_photo_folder.py OUT --layout flat --classes 4 --per-class 50 --min-size 120 --max-size 400
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

SHAPES = ("disc", "square", "triangle", "ring", "cross", "hbars", "vbars", "diamond")


def draw_photo(shape: str, width: int, height: int, rng: random.Random):  # noqa: ANN201 (PIL image)
    """One image of ``shape`` on a noisy tinted background."""
    import numpy as np
    from PIL import Image, ImageDraw

    base = np.array([rng.randint(40, 215) for _ in range(3)], dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 18, (height, width, 3))
    ramp = np.linspace(-25, 25, width, dtype=np.float32)[None, :, None]
    img = Image.fromarray(np.clip(base + noise + ramp, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    side = min(width, height)
    r = side * rng.uniform(0.18, 0.38)
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    colour = tuple(int((c + 128 + rng.randint(-40, 40)) % 256) for c in base)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    elif shape in ("hbars", "vbars"):
        for k in range(3):
            o = -r + k * r
            bar = (cx - r, cy + o - r / 6, cx + r, cy + o + r / 6)
            draw.rectangle(
                bar if shape == "hbars" else (bar[1] - cy + cx, bar[0] - cx + cy, bar[3] - cy + cx, bar[2] - cx + cy),
                fill=colour,
            )
    else:  # diamond
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    return img


def _size(rng: random.Random, min_size: int, max_size: int) -> tuple[int, int]:
    short = rng.randint(min_size, max_size)
    aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
    return (round(short * aspect), short) if aspect >= 1 else (short, round(short / aspect))


def make_photo_folder(
    root: str | Path,
    layout: str = "flat",
    classes: int = 4,
    per_class: int = 40,
    min_size: int = 120,
    max_size: int = 400,
    seed: int = 0,
    splits: tuple[str, ...] = ("train", "val", "test"),
    split_share: tuple[float, ...] = (0.7, 0.15, 0.15),
    quality: int = 90,
) -> Path:
    """Write the folder; returns ``root``. ``split`` layouts spread each class by ``split_share`` over ``splits``."""
    root = Path(root)
    rng = random.Random(seed)
    names = [SHAPES[i % len(SHAPES)] + (f"{i // len(SHAPES)}" if i >= len(SHAPES) else "") for i in range(classes)]
    rows = []
    for c, name in enumerate(names):
        for i in range(per_class):
            img = draw_photo(SHAPES[c % len(SHAPES)], *_size(rng, min_size, max_size), rng)
            if layout == "flat":
                path = root / name / f"img_{i:04d}.jpg"
            elif layout == "split":
                share = [s / sum(split_share[: len(splits)]) for s in split_share[: len(splits)]]
                cut, k, acc = i / per_class, 0, share[0]
                while cut >= acc and k + 1 < len(splits):
                    k += 1
                    acc += share[k]
                path = root / splits[k] / name / f"img_{i:04d}.jpg"
            elif layout == "csv":
                path = root / "images" / f"{c:02d}_{i:04d}.jpg"
                rows.append((f"images/{path.name}", name))
            else:
                raise ValueError(f"layout must be flat, split or csv, got {layout!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=quality)
    if layout == "csv":
        with open(root / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(rows)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--layout", default="flat", choices=("flat", "split", "csv"))
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--min-size", type=int, default=120)
    parser.add_argument("--max-size", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = make_photo_folder(
        args.out, args.layout, args.classes, args.per_class, args.min_size, args.max_size, args.seed
    )
    print(f"wrote {args.classes * args.per_class} images to {root}")


if __name__ == "__main__":
    main()
