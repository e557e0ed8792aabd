"""One image reader for training, evaluation, caching and prediction: decode, EXIF orientation, colour mode.

``open_image`` is the single place a file becomes a PIL image, so a phone photo is upright in
training exactly as in ``vitkit predict``. ``base_image`` is what the imagefolder path stores per image
(from a path, a PIL image or a tensor): the short side resized to ``size`` (aspect ratio kept), then
the centred ``size x size`` square. ``vitkit.data.crops.eval_view`` crops it to the model's input.
``IMAGE_SUFFIXES`` are the files every reader takes as images (folders, CSV listings, ``vitkit predict``,
``vitkit shards``' tar entries: a subset of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vitkit.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

INTERPOLATIONS = ("bilinear", "bicubic")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # PIL mode of a (C, H, W) uint8 tensor
# The one list of image file suffixes (lower case): what training's folder and CSV readers, `vitkit predict`
# and `vitkit serve` read; `vitkit.data.shards` keeps the subset whose bytes go into tars as they are.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def is_image_name(path: str | Path) -> bool:
    """Whether ``path``'s suffix (any case) is one of ``IMAGE_SUFFIXES``: a file vitkit reads as an image."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def base_size(img_size: int, crop_pct: float) -> int:
    """``S``, the side of an imagefolder's stored base images: ``round(img_size / crop_pct)``, at least
    ``img_size`` (the evaluation view is their centred ``img_size`` crop)."""
    return max(img_size, round(img_size / crop_pct))


def open_image(path: str | Path | bytes, mode: str | None = None, draft: int = 0) -> Image.Image:
    """Decode ``path`` (a file, or an image file's bytes) with EXIF orientation applied (upright as in
    photo viewers), in ``mode`` if given.

    ``draft``: for JPEGs, let libjpeg decode at a reduced scale whose both sides stay >= ``draft``
    pixels (DCT-domain downscaling: several times faster on large photos). PIL's exceptions pass through.
    """
    import io

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as img:
        if draft and img.format == "JPEG":
            img.draft("RGB" if mode != "L" else "L", (draft, draft))
        img.load()  # decode now: a truncated file fails here, not later
        img = ImageOps.exif_transpose(img)
        return img.convert(mode) if mode is not None and img.mode != mode else img


def short_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """``(H, W)`` of an ``h x w`` image resized so that its short side is ``size`` (aspect ratio kept)."""
    scale = size / min(h, w)
    return max(size, round(h * scale)), max(size, round(w * scale))


def resize_short_side(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """The image with its short side at ``size`` (aspect ratio kept)."""
    from PIL import Image

    w, h = img.size
    if min(w, h) == size:
        return img
    new_h, new_w = short_side_shape(h, w, size)
    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    return img.resize((new_w, new_h), resample, reducing_gap=None)


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image (L or RGB) as a ``(C, H, W)`` uint8 tensor."""
    import numpy as np

    array = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return array[None] if array.ndim == 2 else array.permute(2, 0, 1).contiguous()


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """A ``(C, H, W)`` or ``(H, W)`` tensor (uint8, or float in [0, 1], rounded to uint8) with 1, 3 or 4
    channels as a PIL image: the image a PNG of it would decode to."""
    from PIL import Image

    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] not in MODES:
        raise UserError(
            f"expected an image tensor of shape (C, H, W) with 1, 3 or 4 channels, got {tuple(image.shape)}"
        )
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = image.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if image.shape[0] == 1 else array, MODES[image.shape[0]])


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The centred ``size x size`` region of each image (images at least that large)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def base_image(
    image: str | Path | bytes | Image.Image | torch.Tensor, in_chans: int, size: int, interpolation: str = "bilinear"
) -> torch.Tensor:
    """``(in_chans, size, size)`` uint8, the stored form of every image of an imagefolder: decoded
    (a path or a file's bytes: reduced-size JPEG decoding, EXIF orientation applied), grey or RGB, short
    side resized to ``size``, centre square kept. ``image``: a path, an image file's bytes, a PIL image
    or a tensor (see ``tensor_to_pil``)."""
    mode = "L" if in_chans == 1 else "RGB"
    if isinstance(image, (str, Path, bytes)):
        img = open_image(image, mode, draft=size)
    else:
        img = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image
        img = img.convert(mode) if img.mode != mode else img
    return center_crop(to_uint8_tensor(resize_short_side(img, size, interpolation)), size).contiguous()


def load_base(path: str | Path, in_chans: int, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The base image of a file (``base_image``)."""
    return base_image(Path(path), in_chans, size, interpolation)
