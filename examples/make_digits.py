"""Write examples/digits/<label>/test_<index>.png: two images per class from the digits TEST split.

The 8x8 originals are upscaled to 64x64 grey PNGs (bilinear), so they look like small photos of digits;
the folder names are the true labels, so `vitkit predict ... --out grid.png` colours each panel
green (right) or red (wrong). Run from the repository root:  python examples/make_digits.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from vitkit.data.datasets import Digits

PER_CLASS = 2
SIZE = 64
OUT = Path(__file__).resolve().parent / "digits"


def main() -> None:
    test = Digits(img_size=8).load().test  # the fixed 20% test split: never seen in training
    if OUT.exists():
        shutil.rmtree(OUT)
    for label in range(10):
        indices = (test.labels == label).nonzero().flatten()[:PER_CLASS].tolist()
        folder = OUT / str(label)
        folder.mkdir(parents=True)
        for index in indices:
            pixels = (test.images[index, 0] * 255).round().byte().numpy()
            image = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            image.save(folder / f"test_{index:03d}.png", optimize=True)
    print(f"wrote {10 * PER_CLASS} images under {OUT}")


if __name__ == "__main__":
    main()
