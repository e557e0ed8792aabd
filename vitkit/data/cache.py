"""Decode once: every image of an imagefolder stored as ``(C, S, S)`` uint8, ``S = round(img_size / crop_pct)``.

The first pass decodes each file once (workers; PIL with reduced-size JPEG decoding, EXIF orientation
applied) into its *base* image: short side resized to ``S``, centred ``S x S`` square kept (see
``vitkit.data.imageio.load_base``). The cache holds those; later epochs crop and flip them in batches
on the device like the in-memory datasets (random-resized crops during training, the centred
``img_size`` crop for evaluation, which is exactly "resize the short side to S, centre-crop").

``data.cache``: ``memory`` keeps them in RAM; ``disk`` in a memory-mapped file under ``data.cache_dir``
(default ``<root>/.vitkit-cache``) named by a hash of every file's path, size and mtime plus ``S``,
channels and interpolation, so a later run (or ``vitkit eval``) reuses it and any change rebuilds it;
``auto`` is memory when the cache fits ``data.cache_limit_gb`` and half the free RAM; ``off`` streams
from files with workers every epoch. A cache too large falls back to streaming with a message.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vitkit.data.imageio import load_base
from vitkit.engine.console import console

MODES = ("auto", "memory", "disk", "off")


class _Decode(Dataset):
    """Base images of ``files``; an unreadable file gives zeros and its reason."""

    def __init__(self, files: list[Path], in_chans: int, size: int, interpolation: str) -> None:
        self.files, self.in_chans, self.size, self.interpolation = files, in_chans, size, interpolation

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        from vitkit.data.imagecheck import image_problem

        try:
            return load_base(self.files[index], self.in_chans, self.size, self.interpolation), ""
        except Exception:  # noqa: BLE001 (any decode failure: ask the pre-scan's reader why)
            why = image_problem(self.files[index]) or "could not be decoded"
            return torch.zeros(self.in_chans, self.size, self.size, dtype=torch.uint8), why


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([i[0] for i in items]), [i[1] for i in items]


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


def cache_key(files: list[Path], in_chans: int, size: int, interpolation: str) -> str:
    """A hash of every file's path, size and mtime, and of how the base images are made."""
    h = hashlib.sha256(f"v1 {in_chans} {size} {interpolation}\n".encode())
    for path in files:
        st = path.stat()
        h.update(f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _free_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def choose_mode(mode: str, nbytes: int, limit_gb: float, cache_dir: Path) -> tuple[str, str]:
    """(memory | disk | off, why) for a cache of ``nbytes``."""
    gib = nbytes / 2**30
    if mode == "off":
        return "off", ""
    if mode == "disk":
        cache_dir.mkdir(parents=True, exist_ok=True)
        import shutil

        free = shutil.disk_usage(cache_dir).free
        if nbytes > free:
            return "off", f"the image cache ({gib:.1f} GiB) does not fit in {cache_dir}; streaming from files"
        return "disk", ""
    if nbytes > _free_ram() // 2:
        return "off", f"the image cache ({gib:.1f} GiB) would take over half the free RAM; streaming from files"
    if mode == "auto" and gib > limit_gb:
        return "off", (
            f"the image cache ({gib:.1f} GiB) is over data.cache_limit_gb = {limit_gb:g}; streaming from files "
            '(data.cache = "disk" keeps it in a memory-mapped file)'
        )
    return "memory", ""


def decode_all(
    files: list[Path], in_chans: int, size: int, interpolation: str, num_workers: int, out: torch.Tensor
) -> dict[Path, str]:
    """Decode ``files`` into ``out`` (N, C, S, S) with a progress bar; returns ``{path: reason}`` of bad ones."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    loader = DataLoader(
        _Decode(files, in_chans, size, interpolation),
        batch_size=32,
        num_workers=num_workers,
        collate_fn=_collate,
        generator=torch.Generator().manual_seed(0),  # leaves the global RNG (model init) as without a cache
    )
    bad: dict[Path, str] = {}
    columns = (TextColumn("decoding images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=console.quiet) as progress:
        task = progress.add_task("decode", total=len(files))
        start = 0
        for images, reasons in loader:
            out[start : start + len(images)] = images
            for offset, why in enumerate(reasons):
                if why:
                    bad[files[start + offset]] = why
            start += len(images)
            progress.update(task, completed=start)
    return bad


def build_cache(
    files: list[Path],
    in_chans: int,
    size: int,
    interpolation: str,
    mode: str,
    cache_dir: Path,
    limit_gb: float,
    num_workers: int,
) -> tuple[torch.Tensor, dict[Path, str]] | None:
    """The base images of ``files`` as one ``(N, C, S, S)`` uint8 tensor, and the unreadable files;
    ``None`` when the cache is off or too large (the caller streams)."""
    import numpy as np

    nbytes = len(files) * in_chans * size * size
    chosen, why = choose_mode(mode, nbytes, limit_gb, cache_dir)
    if why:
        console.print(f"[yellow]note:[/] {why}", soft_wrap=True)
    if chosen == "off":
        return None
    shape = (len(files), in_chans, size, size)
    if chosen == "memory":
        store = torch.empty(shape, dtype=torch.uint8)
        return store, decode_all(files, in_chans, size, interpolation, num_workers, store)
    key = cache_key(files, in_chans, size, interpolation)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    if data_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("shape") == list(shape):
            store = torch.from_numpy(np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape))
            console.print(f"image cache: {data_path} ({nbytes / 2**20:.0f} MiB, reused)")
            return store, {Path(p): w for p, w in meta.get("bad", {}).items()}
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    bad = decode_all(files, in_chans, size, interpolation, num_workers, torch.from_numpy(array))
    array.flush()
    del array
    os.replace(tmp, data_path)
    meta_path.write_text(json.dumps({"shape": list(shape), "bad": {str(p): w for p, w in bad.items()}}))
    console.print(f"image cache: {data_path} ({nbytes / 2**20:.0f} MiB, written)")
    store = torch.from_numpy(np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape))
    return store, bad
