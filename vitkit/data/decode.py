"""Decoding every image of a split once, into base images (``vitkit.data.imageio.load_base``): PIL in
DataLoader workers, or nvjpeg on a CUDA device (JPEGs; other formats and failed batches through PIL),
with a progress bar; an unreadable file gives zeros and its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from vitkit.data.imageio import load_base
from vitkit.engine.console import console


class _Decode(Dataset):
    """Base images of ``files``; an unreadable file gives zeros and its reason."""

    def __init__(
        self, files: list[Path], in_chans: int, size: int, interpolation: str, crop: int | None = None
    ) -> None:
        self.files, self.in_chans, self.size, self.interpolation = files, in_chans, size, interpolation
        self.crop = crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        from vitkit.data.imagecheck import image_problem

        try:
            return load_base(self.files[index], self.in_chans, self.size, self.interpolation, self.crop), ""
        except Exception:  # noqa: BLE001 (any decode failure: ask the pre-scan's reader why)
            why = image_problem(self.files[index]) or "could not be decoded"
            return torch.zeros(self.in_chans, self.size, self.size, dtype=torch.uint8), why


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([i[0] for i in items]), [i[1] for i in items]


class _Read(Dataset):
    """Raw file bytes (as a uint8 tensor) for decoding on the GPU."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        from torchvision.io import read_file

        return read_file(str(self.files[index])), ""


def gpu_base(image: torch.Tensor, size: int, interpolation: str, crop: int | None = None) -> torch.Tensor:
    """A decoded ``(C, H, W)`` uint8 image on the GPU -> its ``(C, size, size)`` base: the geometry of
    ``base_image`` (torchvision's resize of the tensor, antialiased; the same square), resampled by torch
    instead of PIL, so the bytes differ slightly from the CPU reader's (and from ``vitkit predict``'s):
    mean 0.58 of 255 at ``size`` 256 on 1200x900 JPEGs, measured with torchvision's CPU decoder
    (``benchmarks/eval_view.py``) when the CPU reader still decoded JPEGs at reduced size."""
    from torchvision.transforms import functional as TF  # noqa: N812

    from vitkit.data.imageio import base_offsets, resample

    x = TF.resize(image.float(), size, interpolation=resample(interpolation), antialias=True)
    top, left = base_offsets(x.shape[-2], x.shape[-1], size, size if crop is None else crop)
    return x[:, top : top + size, left : left + size].round_().clamp_(0, 255).to(torch.uint8)


def _decode_cuda(
    files: list[Path], in_chans: int, size: int, interpolation: str, num_workers: int, out: torch.Tensor,
    device: torch.device, advance: Any, crop: int | None = None,
) -> dict[Path, str]:  # fmt: skip
    """nvjpeg: workers read bytes, the GPU decodes JPEG batches (EXIF applied) and resizes; other formats
    and any batch that fails go through the CPU reader. UNTESTED: written without a GPU at hand."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if in_chans == 1 else ImageReadMode.RGB
    cpu = _Decode(files, in_chans, size, interpolation, crop)
    bad: dict[Path, str] = {}
    loader = DataLoader(_Read(files), batch_size=64, num_workers=num_workers, collate_fn=_collate_list)
    start = 0
    for raw in loader:
        rows = range(start, start + len(raw))
        jpeg = [i for i in rows if files[i].suffix.lower() in (".jpg", ".jpeg")]
        try:
            decoded = decode_jpeg([raw[i - start] for i in jpeg], mode=mode, device=device, apply_exif_orientation=True)
            for i, image in zip(jpeg, decoded, strict=True):
                out[i] = gpu_base(image, size, interpolation, crop).cpu()
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


def nvjpeg(device: torch.device | None) -> bool:
    """Whether images decoded for ``device`` go through nvjpeg (CUDA) rather than PIL."""
    return device is not None and device.type == "cuda" and torch.cuda.is_available()


def decode_all(
    files: list[Path],
    in_chans: int,
    size: int,
    interpolation: str,
    num_workers: int,
    out: torch.Tensor,
    device: torch.device | None = None,
    crop: int | None = None,
) -> dict[Path, str]:
    """Decode ``files`` into ``out`` (N, C, S, S) with a progress bar; returns ``{path: reason}`` of bad ones.
    On a CUDA ``device`` JPEGs are decoded by nvjpeg (``torchvision.io.decode_jpeg``). ``crop``: the
    evaluation crop the bases are placed around (``base_image``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if nvjpeg(device):
        columns = (TextColumn("decoding images (nvjpeg)"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True, disable=console.quiet) as progress:
            task = progress.add_task("decode", total=len(files))
            return _decode_cuda(
                files, in_chans, size, interpolation, num_workers, out, device,
                lambda n: progress.update(task, completed=n), crop,
            )  # fmt: skip
    loader = DataLoader(
        _Decode(files, in_chans, size, interpolation, crop),
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
