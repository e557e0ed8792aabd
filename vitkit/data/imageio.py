"""One image reader for training, evaluation, caching and prediction: decode, EXIF orientation, colour mode.

``open_image`` is the single place a file becomes a PIL image, so a phone photo is upright in
training exactly as in ``vitkit predict``. ``base_image`` is what the imagefolder path stores per image
(from a path, a PIL image or a tensor): the short side resized to ``size`` (aspect ratio kept), then
the ``size x size`` square around the evaluation crop. ``vitkit.data.crops.eval_view`` crops it to the
model's input. ``IMAGE_SUFFIXES`` are the files every reader takes as images (folders, CSV listings,
``vitkit predict``, ``vitkit shards``' tar entries: a subset of them).

The geometry is timm's evaluation transform (``timm.data.create_transform`` with ``crop_mode="center"``),
which is what an exported hf folder's ``pretrained_cfg`` tells every consumer: ``size`` is
``floor(img_size / crop_pct)``, the resize is torchvision's ``Resize(size)`` (long side
``int(size * long / short)``, PIL's filter) on the whole decoded image (no reduced-size JPEG decoding),
the crop torchvision's ``CenterCrop`` (offsets ``round((side - crop) / 2)``). The stored square is
placed so that its centred crop is exactly that crop (``base_offsets``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """``S``, the side of an imagefolder's stored base images: ``floor(img_size / crop_pct)`` as timm's
    evaluation transform resizes, at least ``img_size`` (the evaluation view is their centred ``img_size`` crop)."""
    return max(img_size, math.floor(img_size / crop_pct))


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


def resample(interpolation: str) -> Any:
    """torchvision's ``InterpolationMode`` of ``bilinear`` or ``bicubic`` (PIL's filters on PIL images)."""
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC if interpolation == "bicubic" else InterpolationMode.BILINEAR


def resize_short_side(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """The image with its short side at ``size``: torchvision's ``Resize(size)``, as timm's evaluation
    transform resizes (the long side is ``int(size * long / short)``)."""
    from torchvision.transforms import functional as TF  # noqa: N812

    return TF.resize(img, size, interpolation=resample(interpolation))


def squash_view(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """The whole image resized to ``size x size`` (aspect ratio not kept): timm's ``crop_mode="squash"``
    at crop_pct 1.0, the evaluation view of runs on in-memory datasets."""
    from torchvision.transforms import functional as TF  # noqa: N812

    return TF.resize(image, [size, size], interpolation=resample(interpolation))


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
    """The centred ``size x size`` region of each image (images at least that large): torchvision's
    ``center_crop``, timm's evaluation crop (offsets ``round((side - size) / 2)``)."""
    from torchvision.transforms import functional as TF  # noqa: N812

    return TF.center_crop(images, [size, size])


def base_offsets(height: int, width: int, size: int, crop: int) -> tuple[int, int]:
    """Top and left of the ``size x size`` base square in a ``height x width`` image whose short side is
    ``size``: the square whose centred ``crop x crop`` region (``center_crop``) is the image's own centred
    ``crop x crop`` region, so that cropping a stored base gives timm's evaluation crop of the image."""

    def start(side: int) -> int:
        return round((side - crop) / 2) - round((size - crop) / 2)

    return start(height), start(width)


def image_mode(image: str | Path | bytes | Image.Image | torch.Tensor, in_chans: int) -> Image.Image:
    """A path, an image file's bytes (decoded whole, EXIF orientation applied), a PIL image or a tensor
    (see ``tensor_to_pil``) as a PIL image, grey for 1 channel, else RGB."""
    mode = "L" if in_chans == 1 else "RGB"
    if isinstance(image, (str, Path, bytes)):
        return open_image(image, mode)
    img = tensor_to_pil(image) if isinstance(image, torch.Tensor) else image
    return img.convert(mode) if img.mode != mode else img


def base_image(
    image: str | Path | bytes | Image.Image | torch.Tensor,
    in_chans: int,
    size: int,
    interpolation: str = "bilinear",
    crop: int | None = None,
) -> torch.Tensor:
    """``(in_chans, size, size)`` uint8, the stored form of every image of an imagefolder (``image_mode``
    of ``image``): short side resized to ``size`` (``resize_short_side``), the square around the
    evaluation crop of side ``crop`` (the model's input; default ``size``) kept (``base_offsets``)."""
    img = resize_short_side(image_mode(image, in_chans), size, interpolation)
    top, left = base_offsets(img.height, img.width, size, size if crop is None else crop)
    return to_uint8_tensor(img)[:, top : top + size, left : left + size].contiguous()


def load_base(
    path: str | Path, in_chans: int, size: int, interpolation: str = "bilinear", crop: int | None = None
) -> torch.Tensor:
    """The base image of a file (``base_image``)."""
    return base_image(Path(path), in_chans, size, interpolation, crop)
