"""Evaluation's view of an image file against ``vitkit predict``'s view of it (issue 22, item 12).

Writes 1200x900 JPEGs (``make_photo_folder.draw_photo``: noisy backgrounds, sharp shapes), then measures:

- the mean absolute pixel difference (in [0, 1] units) between the evaluation batch of a file (the
  cached base image, centre-cropped on the device) and the input ``Predictor`` builds from the path,
  at ``img_size`` 224 (crop_pct 0.875: base 256) and at the trained model's size;
- the largest change of a class probability between ``vitkit eval``'s pipeline and the Predictor for
  a small model trained on a folder of such photos (``vitkit run``, 2 epochs on the CPU);
- the GPU decode path's base images (``data.decode_device = "cuda"``: full-size decode, torch resize)
  against the CPU reader's, with torchvision's CPU JPEG decoder standing in for nvjpeg.

    PYTHONPATH=. python benchmarks/eval_view.py --out /tmp/eval_view
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("make_photo_folder", HERE / "make_photo_folder.py")
_photos = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_photos)

RECIPE = """
name = "eval_view"
seed = 0
[model]
name = "vit_nano_patch4_16"
img_size = 32
depth = 2
[data]
dataset = "imagefolder"
root = "ROOT"
batch_size = 16
val_fraction = 0.2
test_fraction = 0.2
[train]
epochs = 2
[output]
dir = "OUT"
"""


def write_photos(root: Path, per_class: int, classes: int = 3) -> list[Path]:
    rng = random.Random(0)
    files = []
    for c in range(classes):
        shape = _photos.SHAPES[c]
        for i in range(per_class):
            path = root / shape / f"{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            _photos.draw_photo(shape, 1200, 900, rng).save(path, quality=90)
            files.append(path)
    return files


def eval_batch(files: list[Path], meta: dict) -> torch.Tensor:
    """What ``vitkit eval`` feeds the model for ``files``: cached base images, the eval transform."""
    import inspect

    from vitkit.data import imageio
    from vitkit.data.imageio import load_base
    from vitkit.data.loaders import BatchTransform

    if hasattr(imageio, "base_size"):
        size = imageio.base_size(meta["img_size"], meta["crop_pct"])
    else:  # older trees: round
        size = max(meta["img_size"], round(meta["img_size"] / meta["crop_pct"]))
    placed = {"crop": meta["img_size"]} if "crop" in inspect.signature(load_base).parameters else {}  # issue 33.4
    interpolation = meta.get("interpolation", "bilinear")
    bases = torch.stack([load_base(f, meta["in_chans"], size, interpolation, **placed) for f in files])
    transform = BatchTransform(meta["img_size"], meta["mean"], meta["std"], crop="center")
    return transform(bases, torch.zeros(len(files), dtype=torch.long))[0]


def predict_batch(predictor, files: list[Path]) -> torch.Tensor:  # noqa: ANN001
    """What ``vitkit predict`` feeds the model for ``files`` (``view`` after issue 22.12, else ``image_tensor``)."""
    read = getattr(predictor, "view", None) or predictor.image_tensor
    return predictor.to_input([read(f) for f in files])


def pixel_difference(files: list[Path], img_size: int, normalised: bool = False) -> float:
    """Mean |eval input - predict input| in [0, 1] pixel units, or after ImageNet normalisation."""
    from vitkit.commands.predict.predictor import Predictor

    mean, std = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if normalised else ((0.0,) * 3, (1.0,) * 3)
    meta = {"classes": ["x"], "in_chans": 3, "img_size": img_size, "mean": mean, "std": std}
    meta |= {"crop_pct": 0.875, "interpolation": "bilinear"}
    return float((eval_batch(files, meta) - predict_batch(Predictor(torch.nn.Identity(), meta), files)).abs().mean())


def gpu_eval_batch(files: list[Path], meta: dict) -> torch.Tensor:
    """``eval_batch`` with the GPU decode path's base images (``gpu_base`` on torchvision's CPU decode)."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from vitkit.data.decode import gpu_base
    from vitkit.data.loaders import BatchTransform

    size = max(meta["img_size"], round(meta["img_size"] / meta["crop_pct"]))
    decoded = [decode_jpeg(read_file(str(f)), mode=ImageReadMode.RGB, apply_exif_orientation=True) for f in files]
    bases = torch.stack([gpu_base(d, size, meta.get("interpolation", "bilinear")) for d in decoded])
    transform = BatchTransform(meta["img_size"], meta["mean"], meta["std"], crop="center")
    return transform(bases, torch.zeros(len(files), dtype=torch.long))[0]


def gpu_path_difference(files: list[Path], size: int) -> dict[str, float]:
    """Mean and largest |difference| (of 255) between the GPU path's base images (run on the CPU) and the
    CPU reader's."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from vitkit.data.decode import gpu_base
    from vitkit.data.imageio import load_base

    diffs = []
    for f in files:
        decoded = decode_jpeg(read_file(str(f)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        diffs.append((gpu_base(decoded, size, "bilinear").float() - load_base(f, 3, size).float()).abs())
    return {"mean_of_255": float(torch.stack(diffs).mean()), "max_of_255": float(torch.stack(diffs).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=12)
    args = parser.parse_args()
    root = args.out / "photos"
    files = sorted(root.rglob("*.jpg")) if root.is_dir() else write_photos(root, args.per_class)
    result = {"images": len(files), "size": "1200x900"}
    result["pixel_diff_224"] = pixel_difference(files, 224)
    result["pixel_diff_224_normalised"] = pixel_difference(files, 224, normalised=True)
    result["pixel_diff_32"] = pixel_difference(files, 32)
    result["gpu_base_diff_S256"] = gpu_path_difference(files[:12], 256)
    result["gpu_base_diff_S37"] = gpu_path_difference(files[:12], 37)

    runs = args.out / "runs"
    if not runs.is_dir():
        recipe = args.out / "recipe.toml"
        recipe.write_text(RECIPE.replace("ROOT", root.as_posix()).replace("OUT", runs.as_posix()))
        subprocess.run([sys.executable, "-m", "vitkit", "run", str(recipe)], check=True, capture_output=True)
    (run_dir,) = (runs / "eval_view").iterdir()
    import vitkit

    predictor = vitkit.load(run_dir, device="cpu")
    with torch.no_grad():
        evaluated = predictor.model(eval_batch(files, predictor.data)).softmax(1)
        predicted = predictor.model(predict_batch(predictor, files)).softmax(1)
        gpu = predictor.model(gpu_eval_batch(files, predictor.data)).softmax(1)
    result["max_probability_change"] = float((evaluated - predicted).abs().max())
    result["gpu_path_max_probability_change"] = float((evaluated - gpu).abs().max())
    result["top1_changes"] = int((evaluated.argmax(1) != predicted.argmax(1)).sum())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
