"""Crops of imagefolder base images (``(B, C, S, S)``, ``S = img_size / crop_pct``), batched on the device.

Training: a random-resized crop per image (torchvision's sampling of area and aspect ratio), all images
resampled in one ``torchvision.ops.roi_align`` call (bilinear, averaging several samples per output
pixel when shrinking, so it antialiases). Evaluation: the centred ``img_size`` crop.

The evaluation view is defined once: ``eval_base`` here (one image: the base its evaluation batch
holds), ``eval_view`` (that base centre-cropped; for in-memory runs the whole image resized),
``timm_data_config`` (the same view in timm's terms, exported) and ``vitkit.data.loaders.eval_transform``
(batches: to float, centre crop or resize, normalise). Training's evaluation and ``vitkit eval`` crop
cached bases with the transform on the device; ``vitkit predict``, the Python API (and so ``serve``) and
``vitkit export`` hand ``eval_base``'s base to the same transform, so a file gives the same model input
bytes everywhere, and test-time augmentation (``evaluation.tta.TTAViews``, which takes that base batch)
the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image


def eval_base(
    image: str | Path | bytes | Image.Image | torch.Tensor,
    in_chans: int,
    img_size: int,
    crop_pct: float,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """``(in_chans, S, S)`` uint8, ``S = base_size(img_size, crop_pct)``: the base image of ``image`` (a
    path, an image file's bytes, a PIL image or a tensor; ``vitkit.data.imageio.base_image``, placed around
    the ``img_size`` evaluation crop) that evaluation's transform crops (and test-time augmentation cuts
    its views from). For a file these are the bytes the imagefolder dataset stores for it."""
    from vitkit.data.imageio import base_image, base_size

    return base_image(image, in_chans, base_size(img_size, crop_pct), interpolation, crop=img_size)


def eval_view(
    image: str | Path | bytes | Image.Image | torch.Tensor,
    in_chans: int,
    img_size: int,
    crop_pct: float,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """``(in_chans, img_size, img_size)`` uint8: what evaluation sees of ``image`` (a path, an image file's
    bytes, a PIL image or a tensor). ``crop_pct`` set (file-backed runs): its base image
    (``vitkit.data.imageio.base_image``, side ``base_size(img_size, crop_pct)``), centre-cropped; for a file
    these are the bytes of its evaluation batch (before normalisation). ``crop_pct`` 0 (runs on in-memory
    datasets): the whole image resized to the input (``squash_view``). Either way timm's evaluation
    transform of the ``timm_data_config`` the run exports."""
    from vitkit.data.imageio import center_crop, image_mode, squash_view, to_uint8_tensor

    if not crop_pct:
        return to_uint8_tensor(squash_view(image_mode(image, in_chans), img_size, interpolation))
    return center_crop(eval_base(image, in_chans, img_size, crop_pct, interpolation), img_size)


def timm_data_config(data: dict[str, Any]) -> dict[str, Any]:
    """timm's data config (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``, ``std``)
    of a run's data metadata: the settings under which ``timm.data.create_transform`` computes
    ``eval_view`` (then normalises as ``eval_transform``), for the ``pretrained_cfg`` of an hf export.
    File-backed runs: ``center`` at the run's crop_pct; in-memory ones: ``squash`` at 1.0 (the whole image)."""
    size = int(data["img_size"])
    crop_pct = float(data.get("crop_pct") or 0.0)
    return {
        "input_size": (int(data["in_chans"]), size, size),
        "interpolation": data.get("interpolation") or "bilinear",
        "crop_pct": crop_pct or 1.0,
        "crop_mode": "center" if crop_pct else "squash",
        "mean": tuple(data["mean"]),
        "std": tuple(data["std"]),
    }


class BatchRandomResizedCrop:
    """Crop a random area (``scale`` of the image) and aspect (``ratio``) of each image, resized to ``size``."""

    def __init__(
        self, size: int, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3), tries: int = 10
    ) -> None:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"crop scale must be (min, max) with 0 < min <= max <= 1, got {list(scale)}")
        self.size, self.scale, self.ratio, self.tries = size, tuple(scale), tuple(ratio), tries

    def boxes(self, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(n, 4)`` boxes ``x1, y1, x2, y2`` in pixels; torchvision's sampling, first fitting try wins,
        the whole image when none fits."""
        area = h * w * torch.empty(n, self.tries, device=device).uniform_(*self.scale)
        log_r = torch.empty(n, self.tries, device=device).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(log_r)
        cw, ch = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        fits = (cw <= w) & (ch <= h)
        first = fits.float().argmax(dim=1, keepdim=True)
        cw = torch.where(fits.any(1), cw.gather(1, first)[:, 0], torch.full((n,), float(w), device=device))
        ch = torch.where(fits.any(1), ch.gather(1, first)[:, 0], torch.full((n,), float(h), device=device))
        x1 = torch.rand(n, device=device) * (w - cw)
        y1 = torch.rand(n, device=device) * (h - ch)
        return torch.stack([x1, y1, x1 + cw, y1 + ch], dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        n, _, h, w = images.shape
        boxes = self.boxes(n, h, w, images.device)
        index = torch.arange(n, device=images.device, dtype=images.dtype)[:, None]
        rois = torch.cat([index, boxes.to(images.dtype)], dim=1)
        return roi_align(images, rois, (self.size, self.size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
