"""Decode once: every image of an imagefolder stored as ``(C, S, S)`` uint8, ``S = floor(img_size / crop_pct)``.

The first pass decodes each file once (workers; PIL, the whole image, EXIF orientation applied) into its
*base* image: short side resized to ``S``, the ``S x S`` square around the evaluation crop kept (see
``vitkit.data.imageio.load_base``; timm's evaluation geometry). A cache records how its bases were made
(``S``, channels, interpolation, crop, decoder) and the version of that recipe (``cachedir.VERSION``):
caches made another way are never reused. The cache holds those; later epochs crop and flip them in batches
on the device like the in-memory datasets (random-resized crops during training, the centred
``img_size`` crop for evaluation, which is exactly "resize the short side to S, centre-crop").

``data.cache``: ``memory`` keeps them in RAM; ``disk`` in a memory-mapped file under ``data.cache_dir``
(default ``<root>/.vitkit-cache``; see ``vitkit.data.cachedir``), found again by any later request for
some of the same files with the same path, size and mtime (a later run, ``vitkit eval``, ``--resume``,
compare); ``auto`` is memory when the cache fits ``data.cache_limit_gb`` and half the available RAM
(MemAvailable); ``off`` streams from files with workers every epoch. A cache too large falls back to
streaming with a message. Under ``torchrun`` with several processes on a machine, the machine holds
one copy: local rank 0 decodes into the disk cache and the other ranks map the same file after a
barrier (``memory`` and ``auto`` then mean that shared file, counted once against the RAM).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vitkit.data import cachedir
from vitkit.data.decode import decode_all, nvjpeg
from vitkit.engine.console import console

MODES = ("auto", "memory", "disk", "off")
DEFAULT_MAX_GB = 50.0  # data.cache_max_gb


class CachedImages:
    """Rows ``rows`` of a cache tensor, indexed like a tensor of images (no copy of the cache)."""

    def __init__(self, store: torch.Tensor, rows: torch.Tensor) -> None:
        self.store, self.rows = store, rows

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.store.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.store.dtype

    @property
    def device(self) -> torch.device:
        return self.store.device

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        return self.store[self.rows[index]]

    def to(self, device: torch.device | str) -> CachedImages | torch.Tensor:
        """Itself on the CPU (still shared); the split's rows copied to another device."""
        device = torch.device(device)
        return self if device.type == "cpu" else self.store[self.rows].to(device)


def _meminfo_text() -> str:
    return Path("/proc/meminfo").read_text()


def available_ram() -> int:
    """Bytes of RAM new data can take without swapping: MemAvailable on Linux (free pages plus the
    reclaimable page cache), else the free pages."""
    try:
        for line in _meminfo_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _disk_room(nbytes: int, cache_dir: Path) -> str:
    """Why a cache of ``nbytes`` cannot be written in ``cache_dir`` ("" when it can)."""
    import shutil

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache_dir).free
    except OSError as err:
        return f"the image cache cannot be written in {cache_dir} ({err.strerror or err}); streaming from files"
    if nbytes > free:
        return f"the image cache ({nbytes / 2**30:.1f} GiB) does not fit in {cache_dir}; streaming from files"
    return ""


def choose_mode(mode: str, nbytes: int, limit_gb: float, cache_dir: Path) -> tuple[str, str]:
    """(memory | disk | off, why) for a cache of ``nbytes``."""
    gib = nbytes / 2**30
    if mode == "off":
        return "off", ""
    if mode == "disk":
        why = _disk_room(nbytes, cache_dir)
        return ("off", why) if why else ("disk", "")
    if nbytes > available_ram() // 2:
        return "off", f"the image cache ({gib:.1f} GiB) would take over half the available RAM; streaming from files"
    if mode == "auto" and gib > limit_gb:
        return "off", (
            f"the image cache ({gib:.1f} GiB) is over data.cache_limit_gb = {limit_gb:g}; streaming from files "
            '(data.cache = "disk" keeps it in a memory-mapped file)'
        )
    return "memory", ""


def _local_processes() -> int:
    """How many processes of this torchrun group run on this machine (1 outside torchrun)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _barrier() -> None:
    """Every rank waits here (decoding may outlast the default collective timeout: a gloo group of its own)."""
    from datetime import timedelta

    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=timedelta(days=1))
    dist.barrier(group=group)
    dist.destroy_process_group(group)


def _note(why: str) -> None:
    if why:
        console.print(f"[yellow]note:[/] {why}", soft_wrap=True)


def _chosen(mode: str, nbytes: int, limit_gb: float, cache_dir: Path) -> str:
    """``choose_mode`` with its note printed; disk is checked for room only when a cache is written."""
    if mode == "disk":
        return "disk"
    chosen, why = choose_mode(mode, nbytes, limit_gb, cache_dir)
    _note(why)
    return chosen


def build_cache(
    files: list[Path],
    in_chans: int,
    size: int,
    interpolation: str,
    mode: str,
    cache_dir: Path,
    limit_gb: float,
    num_workers: int,
    device: torch.device | None = None,
    max_gb: float = DEFAULT_MAX_GB,
    crop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[Path, str]] | None:
    """``(store, rows, bad)``: the base images in one ``(M, C, S, S)`` uint8 tensor, where ``files[i]`` is
    row ``rows[i]``, and the unreadable files; ``None`` when the cache is off or too large (the caller
    streams). ``max_gb``: the disk caches of ``cache_dir`` are kept under this size; ``crop``: the
    evaluation crop (the model's input side) the bases are placed around (``base_image``)."""
    if mode == "off":
        return None
    if not files:
        return torch.empty((0, in_chans, size, size), dtype=torch.uint8), torch.arange(0), {}
    nbytes = len(files) * in_chans * size * size
    local = _local_processes()
    if local > 1:  # one copy per machine: local rank 0 writes the disk cache, the others map it
        first = int(os.environ.get("LOCAL_RANK", "0")) == 0
        cached = None
        if first and _chosen(mode, nbytes, limit_gb, cache_dir) != "off":  # counted once: one copy in the page cache
            cached = _disk_cache(
                files, in_chans, size, interpolation, cache_dir, num_workers, device, max_gb, crop=crop
            )
        _barrier()
        if not first:
            cached = _disk_cache(
                files, in_chans, size, interpolation, cache_dir, num_workers, device, max_gb, False, crop
            )
        if cached is not None:
            console.print(f"image cache: shared by the {local} processes of this machine")
        return cached
    chosen = _chosen(mode, nbytes, limit_gb, cache_dir)
    if chosen == "off":
        return None
    if chosen == "memory":
        store = torch.empty((len(files), in_chans, size, size), dtype=torch.uint8)
        bad = decode_all(files, in_chans, size, interpolation, num_workers, store, device, crop)
        return store, torch.arange(len(files)), bad
    return _disk_cache(files, in_chans, size, interpolation, cache_dir, num_workers, device, max_gb, crop=crop)


def _map(cache: cachedir.Cache) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.memmap(cache.data_path, dtype=np.uint8, mode="c", shape=cache.shape))


def made_by(interpolation: str, size: int, crop: int | None, nvjpeg: bool) -> str:
    """How bases are made beyond their size and channels (a cache is reused only if made the same way):
    the filter, the evaluation crop they are placed around (when not the whole square), the decoder
    (nvjpeg's bases differ a little from PIL's)."""
    placed = f"@{crop}" if crop is not None and crop != size else ""
    return interpolation + placed + ("+nvjpeg" if nvjpeg else "")


def _disk_cache(
    files: list[Path],
    in_chans: int,
    size: int,
    interpolation: str,
    cache_dir: Path,
    num_workers: int,
    device: torch.device | None,
    max_gb: float,
    write: bool = True,
    crop: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[Path, str]] | None:
    """The disk cache covering ``files``: reused when one exists, else written (``write``) and the folder
    trimmed to ``max_gb``; None when it cannot be written."""
    import numpy as np

    stats = cachedir.file_stats(files)
    made = made_by(interpolation, size, crop, nvjpeg(device))
    key = cachedir.cache_key(stats, in_chans, size, made)
    found = cachedir.find_covering(cache_dir, key, stats, in_chans, size, made)
    if found is not None:
        cache, rows = found
        try:
            store = _map(cache)
        except OSError:  # removed since it was found (another process evicted it): write it again
            store = None
        if store is not None:
            cache.touch()
            console.print(f"image cache: {cache.data_path} ({cache.nbytes / 2**20:.0f} MiB, reused)")
            return store, torch.tensor(rows), _bad_of(cache, files, stats)
    if not write:
        return None
    unique = sorted(set(stats))
    shape = (len(unique), in_chans, size, size)
    why = _disk_room(len(unique) * in_chans * size * size, cache_dir)
    if why:
        _note(why)
        return None
    cachedir.sweep_temporaries(cache_dir)
    tmp = cachedir.temporary(cache_dir, key)
    cache = cachedir.Cache(cache_dir, key, {})
    try:  # an interrupted decode (Ctrl-C, an error) leaves no temporary behind
        array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        decoded = [Path(path) for path, _, _ in unique]
        bad = decode_all(decoded, in_chans, size, interpolation, num_workers, torch.from_numpy(array), device, crop)
        array.flush()
        del array
        os.replace(tmp, cache.data_path)
    finally:
        tmp.unlink(missing_ok=True)
    cache.meta = {
        "version": cachedir.VERSION,
        "in_chans": in_chans,
        "size": size,
        "interpolation": made,
        "shape": list(shape),
        "files": [list(stat) for stat in unique],
        "bad": {str(path): why for path, why in bad.items()},
    }
    cachedir.write_json_atomically(cache.meta_path, cache.meta)  # last: the cache exists from here on
    console.print(f"image cache: {cache.data_path} ({cache.nbytes / 2**20:.0f} MiB, written)")
    for old, why in cachedir.evict(cache_dir, cache, int(max_gb * 2**30)):
        console.print(f"image cache: removed {old.data_path} ({old.nbytes / 2**20:.0f} MiB, {why})")
    for path in cachedir.outdated(cache_dir):  # caches of an older vitkit, never reused
        path.unlink(missing_ok=True)
    rows = {stat: row for row, stat in enumerate(unique)}
    return _map(cache), torch.tensor([rows[stat] for stat in stats]), _bad_of(cache, files, stats)


def _bad_of(cache: cachedir.Cache, files: list[Path], stats: list[cachedir.FileStat]) -> dict[Path, str]:
    """The unreadable ones among ``files``, by the caller's paths."""
    bad = cache.meta.get("bad", {})
    return {path: bad[stat[0]] for path, stat in zip(files, stats, strict=True) if stat[0] in bad}
