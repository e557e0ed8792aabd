"""One image reader for training, evaluation, caching and prediction: decode, EXIF orientation, colour mode.

``open_image`` is the single place a file becomes a PIL image, so a phone photo is upright in
training exactly as in ``vitkit predict``. ``load_base`` is what the imagefolder path stores per image:
the short side resized to ``size`` (aspect ratio kept), then the centred ``size x size`` square.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from PIL import Image

INTERPOLATIONS = ("bilinear", "bicubic")


def open_image(path: str | Path, mode: str | None = None, draft: int = 0) -> Image.Image:
    """Decode ``path`` with EXIF orientation applied (upright as in photo viewers), in ``mode`` if given.

    ``draft``: for JPEGs, let libjpeg decode at a reduced scale whose both sides stay >= ``draft``
    pixels (DCT-domain downscaling: several times faster on large photos). PIL's exceptions pass through.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        if draft and img.format == "JPEG":
            img.draft("RGB" if mode != "L" else "L", (draft, draft))
        img.load()  # decode now: a truncated file fails here, not later
        img = ImageOps.exif_transpose(img)
        return img.convert(mode) if mode is not None and img.mode != mode else img


def resize_short_side(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """The image with its short side at ``size`` (aspect ratio kept)."""
    from PIL import Image

    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    return img.resize(new, resample, reducing_gap=None)


def center_square(img: Image.Image, size: int) -> Image.Image:
    """The centred ``size x size`` region of an image whose short side is ``size``."""
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image (L or RGB) as a ``(C, H, W)`` uint8 tensor."""
    import numpy as np

    array = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return array[None] if array.ndim == 2 else array.permute(2, 0, 1).contiguous()


def load_base(path: str | Path, in_chans: int, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """``(in_chans, size, size)`` uint8: decoded (reduced-size JPEG decoding), upright, short side resized
    to ``size``, centre square kept. The stored form of every image of an imagefolder."""
    mode = "L" if in_chans == 1 else "RGB"
    img = open_image(path, mode, draft=size)
    return to_uint8_tensor(center_square(resize_short_side(img, size, interpolation), size))
