"""``vitkit cache``: list the decoded-image caches of a folder, or remove them."""

from __future__ import annotations

import argparse
from pathlib import Path

from vitkit.commands import Command
from vitkit.errors import UserError


def add_arguments(cache: argparse.ArgumentParser) -> None:
    cache.add_argument(
        "dir", nargs="?", default=".", metavar="DATA_ROOT_OR_CACHE_DIR", help="a data root or cache folder (default .)"
    )
    cache.add_argument("--clear", action="store_true", help="remove every cache there (and leftover temporaries)")


def cache_command(args: argparse.Namespace) -> int:
    """List (or with ``--clear`` remove) the caches of ``args.dir``."""
    from vitkit.data import cachedir

    given = Path(args.dir)
    if not given.is_dir():
        raise UserError(f"vitkit cache: {given} is not a folder (give a data root or its .vitkit-cache)")
    folder = cachedir.cache_folder(given)
    if args.clear:
        removed = cachedir.clear(folder)
        for path, nbytes in removed:
            print(f"removed {path} ({_size(nbytes)})")
        total = sum(nbytes for _, nbytes in removed)
        print(f"{len(removed)} removed from {folder}, {_size(total)} freed" if removed else f"no caches in {folder}")
        return 0
    found = cachedir.caches(folder)
    if not found:
        print(f"no caches in {folder}")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"image caches in {folder} ({_size(sum(c.nbytes for c in found))})")
    for column in ("cache", "size", "files", "images", "last used"):
        table.add_column(column, justify="right" if column in ("size", "files") else "left")
    for cache in found:  # most recently used first
        meta = cache.meta
        images = f"{meta['size']} px, {meta['in_chans']} ch, {meta['interpolation']}"
        table.add_row(
            cache.data_path.name, _size(cache.nbytes), str(cache.shape[0]), images, cachedir.age(cache.last_used)
        )
    Console().print(table)
    return 0


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


COMMANDS = (
    Command(
        "cache",
        "list the decoded-image caches of a data root or cache folder (size, files, last used); --clear",
        add_arguments,
        cache_command,
        description='imagefolder disk caches (data.cache = "disk", or shared by torchrun\'s processes) live in '
        "data.cache_dir, by default <data root>/.vitkit-cache; a new one removes those it supersedes and the "
        "least recently used ones beyond data.cache_max_gb.",
        plugin_flags=False,
    ),
)
