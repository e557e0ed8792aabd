"""Shards against the folder cache against timm's wds/ loader, on one generated folder of JPEGs, in one run.

Epoch-2 training img/s of the same model fed by (1) vitkit streaming the folder's WebDataset shards
(``vitkit shards``; decode in the workers, crops and flips batched on the device), (2) vitkit's decoded
folder cache (in memory, crops and flips batched), (3) timm's ``wds/`` reader + ``create_loader`` on the
same shards (RandomResizedCrop + flip per image in the workers); then, with ``--accuracy``, test accuracy
of ``vitkit run`` on the folder against on its shards (same recipe, same seed).

    python benchmarks/shards_data.py [--images 600] [--img-size 32] [--workers 2] [--repeats 3] [--accuracy]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from folder_data import train_epochs  # noqa: E402
from make_photo_folder import make_photo_folder  # noqa: E402

RECIPE = """
name = "NAME"
seed = 0
[model]
name = "vit_nano_patch4_16"
img_size = 32
[data]
DATA
batch_size = 32
[optimizer]
name = "adamw"
lr = 2e-3
[train]
epochs = EPOCHS
threads = 1
[output]
dir = "OUT"
plots = false
"""


def timm_wds_loader(shards: Path, img_size: int, batch: int, workers: int, crop_pct: float):  # noqa: ANN201
    from timm.data import create_dataset, create_loader

    dataset = create_dataset("wds/shards", root=str(shards), split="train", is_training=True, batch_size=batch)
    return create_loader(
        dataset,
        input_size=(3, img_size, img_size),
        batch_size=batch,
        is_training=True,
        num_workers=workers,
        crop_pct=crop_pct,
        interpolation="bilinear",
        use_prefetcher=False,
    )


def accuracy(root: Path, shards: Path, out: Path, epochs: int, seed: int = 0) -> tuple[float, float]:
    """Test accuracy of one recipe trained from the folder and from its shards."""
    info = json.loads((shards / "_info.json").read_text())
    names = {s: json.dumps(info["splits"][s]["filenames"]) for s in ("train", "val", "test")}
    data = {
        "folder": f'dataset = "imagefolder"\nroot = "{root.as_posix()}"',
        "shards": f'dataset = "webdataset"\nroot = "{shards.as_posix()}"\n'
        + "\n".join(f"{s} = {names[s]}" for s in names),
    }
    result = {}
    for name, table in data.items():
        recipe, name = out / f"{name}{seed}.toml", f"{name}{seed}"
        text = RECIPE.replace("NAME", name).replace("DATA", table).replace("EPOCHS", str(epochs))
        text = text.replace("seed = 0", f"seed = {seed}")
        recipe.write_text(text.replace("OUT", (out / "runs").as_posix()))
        subprocess.run([sys.executable, "-m", "vitkit", "run", str(recipe)], check=True, capture_output=True)
        (run_dir,) = (out / "runs" / name).iterdir()
        result[name.removesuffix(str(seed))] = json.loads((run_dir / "summary.json").read_text())["test_acc"]
    return result["folder"], result["shards"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--min-size", type=int, default=120)
    parser.add_argument("--max-size", type=int, default=400)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--crop-pct", type=float, default=0.875)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="vit_nano_patch4_16")
    parser.add_argument("--repeats", type=int, default=3, help="epoch-2 measurements per path (median, range)")
    parser.add_argument("--accuracy", type=int, default=0, metavar="EPOCHS", help="also compare test accuracy")
    parser.add_argument("--seeds", type=int, default=1, help="--accuracy: train each with seeds 0..N-1")
    args = parser.parse_args()

    from vitkit.commands.shards import write_shards
    from vitkit.data.augment import HorizontalFlip
    from vitkit.data.crops import BatchRandomResizedCrop
    from vitkit.data.datasets import ImageFolder
    from vitkit.data.loaders import BatchTransform, InMemoryLoader
    from vitkit.data.stream import StreamLoader
    from vitkit.data.webdataset import WebDataset

    tmp = tempfile.TemporaryDirectory()
    root, shards = Path(tmp.name) / "photos", Path(tmp.name) / "shards"
    make_photo_folder(root, "flat", args.classes, args.images // args.classes, args.min_size, args.max_size, seed=0)
    info = write_shards(str(root), shards, "4MB")
    n_shards = len(info["splits"]["train"]["filenames"])
    print(
        f"{args.images} JPEGs {args.min_size}-{args.max_size} px, img_size {args.img_size}, {args.workers} workers, "
        f"batch {args.batch_size}, {args.model}, torch threads {torch.get_num_threads()}, {n_shards} train shards"
    )

    dev = torch.device("cpu")
    folder = ImageFolder(args.img_size, root=str(root), cache="memory", num_workers=args.workers)
    splits = folder.load()
    mean, std = splits.mean, splits.std

    def transform() -> BatchTransform:
        return BatchTransform(args.img_size, mean, std, [HorizontalFlip()], crop=BatchRandomResizedCrop(args.img_size))

    cache_loader = InMemoryLoader(splits.train, args.batch_size, transform(), dev, True)
    patterns = {s: [str(shards / f) for f in info["splits"][s]["filenames"]] for s in ("train", "val", "test")}
    streamed = WebDataset(args.img_size, **patterns, root=str(shards)).load()
    stream_loader = StreamLoader(streamed.train, args.batch_size, transform(), dev, True, args.workers)
    timm_loader = timm_wds_loader(shards, args.img_size, args.batch_size, args.workers, args.crop_pct)

    def epochs_of(loader):  # noqa: ANN001, ANN202
        epoch = [0]

        def batches():  # noqa: ANN202
            epoch[0] += 1
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch[0])
            return iter(loader)

        return batches

    paths = {"shards": epochs_of(stream_loader), "cache": epochs_of(cache_loader), "timm": epochs_of(timm_loader)}
    runs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):  # interleaved: a load change hits every path alike
        for key, batches in paths.items():
            runs[key].append(train_epochs(args.model, args.img_size, args.classes, batches))
    med = {k: statistics.median(v) for k, v in runs.items()}
    names = {
        "shards": "vitkit webdataset (shards)",
        "cache": "vitkit imagefolder cache",
        "timm": "timm wds/ + create_loader",
    }
    print("\n| path | epoch-2 img/s (median) | range | vs cache |\n| --- | ---: | --- | ---: |")
    for key, label in names.items():
        spread = f"{min(runs[key]):,.0f}-{max(runs[key]):,.0f}"
        print(f"| {label} | {med[key]:,.0f} | {spread} | {med[key] / med['cache']:.2f}x |")
    print(f"\nshards / timm wds = {med['shards'] / med['timm']:.2f}x")
    for seed in range(args.seeds if args.accuracy else 0):
        folder_acc, shards_acc = accuracy(root, shards, Path(tmp.name), args.accuracy, seed)
        print(
            f"seed {seed}: test accuracy after {args.accuracy} epochs: folder {folder_acc:.3f}, shards {shards_acc:.3f}"
        )
    tmp.cleanup()


if __name__ == "__main__":
    main()
