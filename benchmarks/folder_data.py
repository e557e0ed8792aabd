"""imagefolder data path against timm's loader, on one generated folder of JPEG photos, in one run.

(a) first pass: decode + resize img/s of vitkit's cache builder (PIL with reduced-size JPEG decoding,
    short side to img_size / crop_pct, centre square) against timm's ``create_dataset`` + ``create_loader``
    (eval transforms: resize to img_size / crop_pct, centre crop), same workers, same image size;
(b) training img/s of epoch 2 for the same model fed by vitkit's cache (random-resized crop + flip
    batched on the device), by vitkit's in-memory path (a uint8 tensor at img_size, flip + crop batched),
    and by timm's loader (RandomResizedCrop + flip per image in the workers).

    python benchmarks/folder_data.py [--images 1000] [--img-size 32] [--workers 2] [--model vit_nano_patch4_16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_photo_folder import make_photo_folder  # noqa: E402


def first_pass_vitkit(files: list[Path], size: int, workers: int) -> float:
    from vitkit.data.decode import decode_all

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    start = time.perf_counter()
    decode_all(files, 3, size, "bilinear", workers, out)
    return len(files) / (time.perf_counter() - start)


def timm_loader(root: Path, img_size: int, batch: int, workers: int, train: bool, crop_pct: float):  # noqa: ANN201
    from timm.data import create_dataset, create_loader

    dataset = create_dataset("", root=str(root))
    return create_loader(
        dataset,
        input_size=(3, img_size, img_size),
        batch_size=batch,
        is_training=train,
        num_workers=workers,
        crop_pct=crop_pct,
        interpolation="bilinear",
        use_prefetcher=False,
        persistent_workers=True,
    )


def first_pass_timm(root: Path, img_size: int, workers: int, crop_pct: float) -> float:
    loader = timm_loader(root, img_size, 32, workers, False, crop_pct)
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def train_epochs(model_name: str, img_size: int, classes: int, batches, epochs: int = 2) -> float:  # noqa: ANN001
    """img/s of the last of ``epochs`` epochs; ``batches()`` yields (normalised images, labels)."""
    import vitkit

    torch.manual_seed(0)
    model = vitkit.create_model(model_name, img_size=img_size, num_classes=classes, in_chans=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    rate = 0.0
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for images, labels in batches():
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(images)
        rate = n / (time.perf_counter() - start)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="", help="an existing flat folder (default: generate one)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--min-size", type=int, default=120)
    parser.add_argument("--max-size", type=int, default=400)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--crop-pct", type=float, default=0.875)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="vit_nano_patch4_16")
    parser.add_argument("--repeats", type=int, default=3, help="epoch-2 measurements per path (median, range)")
    args = parser.parse_args()

    from vitkit.data.crops import BatchRandomResizedCrop
    from vitkit.data.datasets import ImageFolder, ImageSet
    from vitkit.data.folder import class_files, class_folders
    from vitkit.data.loaders import BatchTransform, InMemoryLoader

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.folder) if args.folder else Path(tmp.name) / "photos"
    if not args.folder:
        per_class = args.images // args.classes
        make_photo_folder(root, "flat", args.classes, per_class, args.min_size, args.max_size, seed=0)
    files = [f for c in class_folders(root) for f in class_files(root / c)]
    size = round(args.img_size / args.crop_pct)
    threads = torch.get_num_threads()
    print(f"{len(files)} JPEGs {args.min_size}-{args.max_size} px, img_size {args.img_size} (cache {size} px), "
          f"{args.workers} workers, batch {args.batch_size}, {args.model}, torch threads {threads}")  # fmt: skip

    rows = []
    v = first_pass_vitkit(files, size, args.workers)
    t = first_pass_timm(root, args.img_size, args.workers, args.crop_pct)
    rows += [
        ("(a) first pass decode+resize", "vitkit cache build", v, v / t),
        ("", "timm create_loader (eval)", t, 1.0),
    ]

    data = ImageFolder(args.img_size, root=str(root), cache="memory", num_workers=args.workers, val_fraction=0.1)
    splits = data.load()
    mean, std = splits.mean, splits.std
    dev = torch.device("cpu")
    from vitkit.data.augment import HorizontalFlip

    crop = BatchRandomResizedCrop(args.img_size)
    cache_tf = BatchTransform(args.img_size, mean, std, [HorizontalFlip()], crop=crop)
    cache_loader = InMemoryLoader(splits.train, args.batch_size, cache_tf, dev, True)
    n = len(splits.train)
    memory = ImageSet(
        torch.randint(0, 256, (n, 3, args.img_size, args.img_size), dtype=torch.uint8), splits.train.labels
    )
    from vitkit.data.augment import RandomCrop

    mem_tf = BatchTransform(args.img_size, mean, std, [RandomCrop(4), HorizontalFlip()])
    mem_loader = InMemoryLoader(memory, args.batch_size, mem_tf, dev, True)
    timm_train = timm_loader(root, args.img_size, args.batch_size, args.workers, True, args.crop_pct)

    def epochs_of(loader):  # noqa: ANN001, ANN202
        epoch = [0]

        def batches():  # noqa: ANN202
            epoch[0] += 1
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch[0])
            return iter(loader)

        return batches

    paths = {"cache": epochs_of(cache_loader), "memory": epochs_of(mem_loader), "timm": epochs_of(timm_train)}
    runs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):  # interleaved: a load change hits every path alike
        for key, batches in paths.items():
            runs[key].append(train_epochs(args.model, args.img_size, args.classes, batches))
    c, m, tl = (statistics.median(runs[k]) for k in ("cache", "memory", "timm"))
    spread = {k: f"{min(v):,.0f}-{max(v):,.0f}" for k, v in runs.items()}
    rows += [
        ("(b) training, epoch 2", f"vitkit imagefolder cache ({spread['cache']})", c, c / m),
        ("", f"vitkit in-memory tensor ({spread['memory']})", m, 1.0),
        ("", f"timm create_loader (train) ({spread['timm']})", tl, tl / m),
    ]
    print("\n| measure | path | img/s | ratio |\n| --- | --- | ---: | ---: |")
    for what, path, rate, ratio in rows:
        print(f"| {what} | {path} | {rate:,.0f} | {ratio:.2f}x |")
    print(
        f"\n(a) vitkit / timm = {v / t:.2f}x; (b) cache / in-memory = {c / m:.2f}x, cache / timm loader = {c / tl:.2f}x"
    )
    tmp.cleanup()


if __name__ == "__main__":
    main()
