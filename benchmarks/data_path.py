"""Share of training-step time spent waiting for data, per loader.

For each case, a training loop (forward, backward, AdamW) runs over the loader; the time blocked
in ``next(iterator)`` is the data wait (for the in-memory loader it includes the batched
augmentation and normalisation, which run in the caller), the rest of the step is compute.

Cases: the in-memory loader on digits (the digits recipe's model and augmentation), the in-memory
loader on a CIFAR-sized random uint8 set (50,000 x 3 x 32 x 32, random crop + flip, ViT-Ti/4), and
a DataLoader with workers over an ImageFolder of PNGs written to a temporary directory.

    python benchmarks/data_path.py
    python benchmarks/data_path.py --steps 30 --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measure(loader: Any, model: Any, optimizer: Any, steps: int, warmup: int) -> dict[str, float]:
    """Median data wait and compute per step over ``steps`` steps after ``warmup`` steps."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    waits, computes = [], []
    epoch = 0
    iterator = iter(loader)
    while len(waits) < steps + warmup:
        start = time.perf_counter()
        try:
            images, targets = next(iterator)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            iterator = iter(loader)
            continue
        got = time.perf_counter()
        loss = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if images.is_cuda:
            torch.cuda.synchronize()
        waits.append(got - start)
        computes.append(time.perf_counter() - got)
    waits, computes = waits[warmup:], computes[warmup:]
    wait, compute = sum(waits), sum(computes)
    return {
        "wait_ms": statistics.median(waits) * 1e3,
        "compute_ms": statistics.median(computes) * 1e3,
        "wait_share": wait / (wait + compute),
        "median_share": statistics.median(waits) / (statistics.median(waits) + statistics.median(computes)),
        "max_wait_ms": max(waits) * 1e3,
    }


def model_and_optimizer(name: str, **kwargs: Any) -> tuple[Any, Any]:
    import vitkit
    from vitkit.optim import adamw, param_groups

    model = vitkit.create_model(name, **kwargs)
    return model, adamw(param_groups(model, 0.05), lr=1e-3)


def digits_case(batch: int) -> tuple[Any, str]:
    from vitkit.data import BatchTransform
    from vitkit.data.loaders import InMemoryLoader
    from vitkit.engine import build
    from vitkit.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "digits.toml")
    img_size = build.model_img_size(recipe)
    data = build.load_dataset(recipe, img_size)
    transform = BatchTransform(img_size, data.mean, data.std, build.build_augments(recipe))
    loader = InMemoryLoader(data.train, batch, transform, _cpu(), train=True)
    return loader, recipe.model["name"]


def cifar_sized_case(batch: int) -> Any:
    import torch

    from vitkit.data import BatchTransform, ImageSet
    from vitkit.data.augment import HorizontalFlip, RandomCrop
    from vitkit.data.loaders import InMemoryLoader

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (50_000,), generator=g)
    transform = BatchTransform(32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), [RandomCrop(4), HorizontalFlip()])
    return InMemoryLoader(ImageSet(images, labels), batch, transform, _cpu(), train=True)


def imagefolder_case(root: Path, batch: int, workers: int, per_class: int) -> Any:
    import torch
    from PIL import Image

    from vitkit.data import BatchTransform
    from vitkit.data.datasets import ImageFolder
    from vitkit.data.loaders import FileLoader

    g = torch.Generator().manual_seed(0)
    for label in range(10):
        folder = root / "train" / f"class_{label}"
        folder.mkdir(parents=True)
        pixels = torch.randint(0, 256, (per_class, 32, 32, 3), dtype=torch.uint8, generator=g).numpy()
        for i in range(per_class):
            Image.fromarray(pixels[i]).save(folder / f"{i}.png")
    data = ImageFolder(32, root=str(root), val_fraction=0.1, cache="off", crop_pct=1.0).load()  # streamed files
    transform = BatchTransform(32, data.mean, data.std)
    return FileLoader(data.train, batch, transform, _cpu(), train=True, num_workers=workers)


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the ImageFolder case")
    parser.add_argument("--per-class", type=int, default=200, help="PNGs per class in the ImageFolder case")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console = Console(highlight=False, width=132)
    rows = []

    loader, model_name = digits_case(args.batch_size)
    model, optimizer = model_and_optimizer(model_name, in_chans=1, num_classes=10)
    rows.append(("in-memory, digits", model_name, measure(loader, model, optimizer, args.steps, args.warmup)))

    tiny = {"img_size": 32, "patch_size": 4, "num_classes": 10}
    loader = cifar_sized_case(args.batch_size)
    model, optimizer = model_and_optimizer("vit_tiny_patch16_224", **tiny)
    rows.append(("in-memory, 50k x 3x32x32 uint8", "vit_tiny /4", measure(loader, model, optimizer, args.steps, 3)))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        loader = imagefolder_case(Path(tmp), args.batch_size, args.workers, args.per_class)
        console.print(f"wrote {10 * args.per_class} PNGs in {time.perf_counter() - start:.1f} s")
        model, optimizer = model_and_optimizer("vit_tiny_patch16_224", **tiny)
        result = measure(loader, model, optimizer, args.steps, args.warmup)
        rows.append((f"DataLoader, {args.workers} workers, PNG ImageFolder", "vit_tiny /4", result))

    table = Table(title=f"data wait share of step time (batch {args.batch_size}, {torch.get_num_threads()} threads)")
    for column in ("loader", "model", "wait ms", "compute ms", "wait share", "median share", "max wait ms"):
        table.add_column(column, justify="left" if column in ("loader", "model") else "right")
    for name, model_name, r in rows:
        share = r["wait_share"]
        colour = "green" if share < 0.05 else "yellow"
        table.add_row(
            name,
            model_name,
            f"{r['wait_ms']:.2f}",
            f"{r['compute_ms']:.1f}",
            f"[{colour}]{share:.1%}[/]",
            f"{r['median_share']:.1%}",
            f"{r['max_wait_ms']:.1f}",
        )
    console.print(table)
    console.print(
        "wait ms / compute ms: medians per step; wait share: total wait / total step time; "
        "median share: median wait / (median wait + median compute), robust to load spikes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
