"""``vitkit shards SOURCE --out DIR``: WebDataset tar shards of anything vitkit reads, one set per split.

SOURCE is a folder of images (any layout ``imagefolder`` reads), a recipe (its data), or a run
directory (its recipe and its ``split.json``, so the shards hold exactly the run's splits). The splits
come from ``vitkit.engine.build.load_dataset``, the path every run takes; the shard format is
``vitkit.data.shards``'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vitkit.commands import Command
from vitkit.errors import UserError


def add_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("source", metavar="SOURCE", help="a folder of images, a TOML recipe, or a run directory")
    cmd.add_argument("--out", required=True, metavar="DIR", help="folder to write the shards into (new or empty)")
    cmd.add_argument("--shard-size", default="256MB", metavar="SIZE", help="largest shard (default 256MB)")
    cmd.add_argument(
        "--max-size", type=int, default=0, metavar="N", help="re-encode images larger than N px on their long side"
    )


def source_data(source: str) -> tuple[Any, str]:
    """The splits of SOURCE as a run would load them (``DataSplits``), and what SOURCE is, in words."""
    from vitkit.engine import build
    from vitkit.recipe import load_recipe, recipe_from_dict
    from vitkit.runs.layout import is_run_dir

    path = Path(source)
    if is_run_dir(path):  # the files of its split.json (the original files are copied, not decoded into a cache)
        from vitkit.runs.finished import open_run

        return open_run(path).load_data(overrides=['data.cache="off"']), "run"
    if path.is_file() and path.suffix == ".toml":
        recipe, kind = load_recipe(path), "recipe"
    elif path.is_dir():
        recipe, kind = recipe_from_dict({"data": {"dataset": "imagefolder", "root": str(path)}}), "folder"
    else:
        raise UserError(f"vitkit shards: {source} is not a folder of images, a TOML recipe or a run directory")
    recipe.data.cache = "off"  # the original files are copied, not decoded into a cache
    data = build.load_dataset(recipe, build.model_img_size(recipe))
    return data, kind


def split_samples(split: Any, name: str, root: Path) -> list[tuple[Any, Any, str]]:
    """``(image path or tensor, label, name recorded)`` of every sample of a split, in order (a label: a
    class index, or a tuple of them for multi-label data)."""
    if split.in_memory:
        return [(split.images[i], label, f"{name}/{i}") for i, label in enumerate(split.targets())]
    samples = getattr(split.files, "samples", None)
    if samples is None:
        raise UserError(f"vitkit shards: the {name} split does not list its files")
    out = []
    for path, label in samples:
        try:
            recorded = str(Path(path).resolve().relative_to(root.resolve()))
        except ValueError:
            recorded = str(path)
        out.append((path, label if isinstance(label, tuple) else int(label), recorded))
    return out


def write_shards(source: str, out: Path, shard_size: str = "256MB", max_size: int = 0) -> dict[str, Any]:
    """Write the shard set of ``source`` into ``out``; returns its ``_info.json`` content."""
    import json

    from vitkit.data import shards

    shard_bytes = shards.parse_size(shard_size)
    if max_size < 0:
        raise UserError(f"--max-size: expected a positive number of pixels, got {max_size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"vitkit shards: --out {out} exists and is not an empty folder")
    data, kind = source_data(source)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(data.split_record["root"]) if data.split_record else Path(source)
    written = [
        shards.write_split(
            out, name, split_samples(getattr(data, name), name, root), data.classes, shard_bytes, max_size
        )
        for name in ("train", "val", "test")
    ]
    shards.write_index(out, out.resolve().name, data.classes, written, f"{kind} {source}")
    return json.loads((out / shards.INFO).read_text())


def shards_command(args: argparse.Namespace) -> int:
    """Write the shards and print one line per split."""
    out = Path(args.out)
    info = write_shards(args.source, out, args.shard_size, args.max_size)
    for name, split in info["splits"].items():
        size = sum((out / f).stat().st_size for f in split["filenames"])
        print(f"{name}: {split['num_samples']} images in {len(split['filenames'])} shards ({size / 2**20:.1f} MiB)")
    print(
        f'wrote {out}/ ({len(info["classes"])} classes); train from it with data.dataset = "webdataset", '
        f'data.root = "{out}", data.train = "train-{{000000..{len(info["splits"]["train"]["filenames"]) - 1:06d}}}.tar"'
    )
    return 0


COMMANDS = (
    Command(
        "shards",
        "write WebDataset tar shards (train/val/test) of a folder, a recipe's data or a run's splits",
        add_arguments,
        shards_command,
        description="Writes <split>-000000.tar, ... per split, classes.json and _info.json (sample counts per "
        "shard, as timm's wds/ reader reads them, and images per class for data.balance) for "
        'data.dataset = "webdataset". Images keep their encoded bytes (JPEG, PNG, WebP; others become PNG) '
        "unless --max-size shrinks them.",
        plugin_flags=False,
    ),
)
