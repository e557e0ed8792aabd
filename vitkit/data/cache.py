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


class _Read(Dataset):
    """Raw file bytes (as a uint8 tensor) for decoding on the GPU."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        from torchvision.io import read_file

        return read_file(str(self.files[index])), ""


def _gpu_base(image: torch.Tensor, size: int, interpolation: str) -> torch.Tensor:
    """A decoded ``(C, H, W)`` uint8 image on the GPU -> its ``(C, size, size)`` base: the geometry of
    ``base_image`` (same resized shape, same centre square), resampled by torch instead of PIL from a
    full-size decode instead of a reduced-size one, so the bytes differ slightly from the CPU reader's
    (and from ``vitkit predict``'s): mean 0.58 of 255 at ``size`` 256 on 1200x900 JPEGs, measured with
    torchvision's CPU decoder (``benchmarks/eval_view.py``)."""
    import torch.nn.functional as F

    from vitkit.data.crops import center_crop
    from vitkit.data.imageio import short_side_shape

    new = short_side_shape(*image.shape[-2:], size)
    x = F.interpolate(image[None].float(), new, mode=interpolation, antialias=True)[0]
    return center_crop(x, size).round_().clamp_(0, 255).to(torch.uint8)


def _decode_cuda(
    files: list[Path], in_chans: int, size: int, interpolation: str, num_workers: int, out: torch.Tensor,
    device: torch.device, advance: Any,
) -> dict[Path, str]:  # fmt: skip
    """nvjpeg: workers read bytes, the GPU decodes JPEG batches (EXIF applied) and resizes; other formats
    and any batch that fails go through the CPU reader. UNTESTED: written without a GPU at hand."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if in_chans == 1 else ImageReadMode.RGB
    cpu = _Decode(files, in_chans, size, interpolation)
    bad: dict[Path, str] = {}
    loader = DataLoader(_Read(files), batch_size=64, num_workers=num_workers, collate_fn=_collate_list)
    start = 0
    for raw in loader:
        rows = range(start, start + len(raw))
        jpeg = [i for i in rows if files[i].suffix.lower() in (".jpg", ".jpeg")]
        try:
            decoded = decode_jpeg([raw[i - start] for i in jpeg], mode=mode, device=device, apply_exif_orientation=True)
            for i, image in zip(jpeg, decoded, strict=True):
                out[i] = _gpu_base(image, size, interpolation).cpu()
            done = set(jpeg)
        except RuntimeError:  # a corrupt JPEG fails the whole batch: let the CPU reader sort it out
            done = set()
        for i in rows:
            if i not in done:
                out[i], why = cpu[i]
                if why:
                    bad[files[i]] = why
        start += len(raw)
        advance(start)
    return bad


def _collate_list(items: list[tuple[torch.Tensor, str]]) -> list[torch.Tensor]:
    return [item[0] for item in items]


def decode_all(
    files: list[Path],
    in_chans: int,
    size: int,
    interpolation: str,
    num_workers: int,
    out: torch.Tensor,
    device: torch.device | None = None,
) -> dict[Path, str]:
    """Decode ``files`` into ``out`` (N, C, S, S) with a progress bar; returns ``{path: reason}`` of bad ones.
    On a CUDA ``device`` JPEGs are decoded by nvjpeg (``torchvision.io.decode_jpeg``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        columns = (TextColumn("decoding images (nvjpeg)"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True, disable=console.quiet) as progress:
            task = progress.add_task("decode", total=len(files))
            return _decode_cuda(
                files, in_chans, size, interpolation, num_workers, out, device,
                lambda n: progress.update(task, completed=n),
            )  # fmt: skip
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
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[Path, str]] | None:
    """``(store, rows, bad)``: the base images in one ``(M, C, S, S)`` uint8 tensor, where ``files[i]`` is
    row ``rows[i]``, and the unreadable files; ``None`` when the cache is off or too large (the caller
    streams)."""
    import numpy as np

    nbytes = len(files) * in_chans * size * size
    chosen, why = choose_mode(mode, nbytes, limit_gb, cache_dir)
    if why:
        console.print(f"[yellow]note:[/] {why}", soft_wrap=True)
    if chosen == "off":
        return None
    shape = (len(files), in_chans, size, size)
    rows = torch.arange(len(files))
    if chosen == "memory":
        store = torch.empty(shape, dtype=torch.uint8)
        return store, rows, decode_all(files, in_chans, size, interpolation, num_workers, store, device)
    key = cache_key(files, in_chans, size, interpolation)
    data_path, meta_path = cache_dir / f"{key}.u8", cache_dir / f"{key}.json"
    if data_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("shape") == list(shape):
            store = torch.from_numpy(np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape))
            console.print(f"image cache: {data_path} ({nbytes / 2**20:.0f} MiB, reused)")
            return store, rows, {Path(p): w for p, w in meta.get("bad", {}).items()}
    tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
    array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
    bad = decode_all(files, in_chans, size, interpolation, num_workers, torch.from_numpy(array), device)
    array.flush()
    del array
    os.replace(tmp, data_path)
    meta_path.write_text(json.dumps({"shape": list(shape), "bad": {str(p): w for p, w in bad.items()}}))
    console.print(f"image cache: {data_path} ({nbytes / 2**20:.0f} MiB, written)")
    store = torch.from_numpy(np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape))
    return store, rows, bad
