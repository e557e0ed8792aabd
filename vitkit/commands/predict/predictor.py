"""Prediction with a trained model: a run (``runs.finished.open_run``), images (files, PIL, tensors) turned into
its input, classified.

The model's input (channels, size, normalisation) comes from the checkpoint's ``data`` metadata, so a
user never re-types it. Images are prepared as the run's evaluation split was, by the same functions:
for imagefolder runs (``crop_pct`` in the metadata) ``vitkit.data.crops.eval_base`` (the stored base
image, what ``vitkit eval``'s loader yields for an image file) and ``eval_transform`` (its centre crop)
or, with ``tta``, ``evaluation.tta.TTAViews`` of the same base; in-memory datasets' models get a file or
PIL image resized whole to their square input by ``eval_view`` (timm's ``squash``), a tensor resized by
``eval_transform``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitkit.data.crops import eval_base, eval_view
from vitkit.data.imageio import IMAGE_SUFFIXES, is_image_name
from vitkit.data.loaders import eval_transform
from vitkit.engine.device import select_device
from vitkit.errors import UserError
from vitkit.runs.finished import FinishedRun, open_run

if TYPE_CHECKING:
    from PIL import Image

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L")


@dataclass
class Prediction:
    """One image's result: top-k ``(label, probability)`` pairs, most probable first, or an ``error``."""

    source: str
    topk: list[tuple[str, float]]
    true_label: str | None = None
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.topk[0][0] if self.topk else None

    @property
    def probability(self) -> float | None:
        return self.topk[0][1] if self.topk else None

    @property
    def correct(self) -> bool | None:
        """Whether the top-1 label is the true one; ``None`` when there is no true label or no prediction."""
        return None if self.true_label is None or self.error else self.label == self.true_label

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "label": self.label,
            "probability": self.probability,
            "topk": [{"label": label, "probability": p} for label, p in self.topk],
            "true_label": self.true_label,
            "correct": self.correct,
            "error": self.error,
        }


# ----------------------------------------------------------------------------------------- images


def collect_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and every non-hidden file under named folders (recursive, sorted).

    Files with a non-image suffix are kept so that they get an error row saying why they were skipped.
    """
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found = (p for p in item.rglob("*") if p.is_file() and not p.name.startswith("."))
            files += sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(item).parts))
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"{item} does not exist (expected an image file or a folder of images)")
    return files


@contextmanager
def reading(path: Path | None = None) -> Iterator[None]:
    """Around decoding ``path`` (``None``: an image file's bytes): a non-image suffix, an unreadable,
    truncated or non-image file raise ``UserError`` saying why."""
    from PIL import Image, UnidentifiedImageError

    if path is not None and not is_image_name(path):
        raise UserError(f"not an image file (suffix {path.suffix or 'none'!r}; expected {', '.join(IMAGE_SUFFIXES)})")
    try:
        yield
    except UnidentifiedImageError:
        raise UserError("not a readable image (unknown or corrupt format)") from None
    except Image.DecompressionBombError as err:
        raise UserError(f"image too large ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated data, bad headers, unreadable file
        raise UserError(f"unreadable image ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def read_image(path: Path | bytes) -> Image.Image:
    """Decode a whole image file (or its bytes), EXIF rotation applied (the training reader); errors as
    ``reading``."""
    from vitkit.data.imageio import open_image

    with reading(None if isinstance(path, bytes) else path):
        return open_image(path)


def pil_to_tensor(img: Image.Image, in_chans: int) -> torch.Tensor:
    """A PIL image as a float ``(in_chans, H, W)`` tensor in [0, 1] (alpha dropped, grey or RGB)."""
    import numpy as np

    mode = "L" if in_chans == 1 else "RGB"
    array = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def adapt_channels(image: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A ``(C, H, W)`` tensor with ``in_chans`` channels: grey <-> RGB converted, an alpha channel dropped."""
    channels = image.shape[0]
    if channels == 4 and in_chans in (1, 3):
        image, channels = image[:3], 3
    if channels == in_chans:
        return image
    if channels == 3 and in_chans == 1:
        weights = torch.tensor(GREY_WEIGHTS, dtype=image.dtype, device=image.device)
        return (image * weights[:, None, None]).sum(dim=0, keepdim=True)
    if channels == 1:
        return image.expand(in_chans, -1, -1)
    raise UserError(f"an image with {channels} channels cannot be fed to a model that takes {in_chans}")


def tensor_image(image: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A user's ``(C, H, W)`` or ``(H, W)`` tensor (uint8, or float in [0, 1]) as float ``(in_chans, H, W)``."""
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise UserError(f"expected an image tensor of shape (C, H, W) or (H, W), got {tuple(image.shape)}")
    image = image.detach().cpu()
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    return adapt_channels(image, in_chans)


# -------------------------------------------------------------------------------------- predictor


class Predictor:
    """A trained model with its classes and input conversion; ``predict`` classifies images.

    Build one with ``vitkit.load(run_dir_or_checkpoint)``. Probabilities are calibrated:
    ``softmax(logits / temperature)`` with the run's temperature (``evaluation.calibration``); ``tta``
    (``"flip"`` or ``"crops"``, ``evaluation.tta``) averages them over augmented views of each image.
    """

    def __init__(
        self,
        model: nn.Module,
        data: dict[str, Any],
        device: str | torch.device = "cpu",
        source: str = "",
        name: str = "",
        temperature: float = 1.0,
        tta: str | None = None,
    ) -> None:
        from vitkit.evaluation.tta import check_tta

        self.device = torch.device(device) if not isinstance(device, str) or device != "auto" else select_device()
        self.model = model.to(self.device).eval()
        self.classes: list[str] = list(data["classes"])
        self.in_chans: int = data["in_chans"]
        self.img_size: int = data["img_size"]
        self.crop_pct: float = data.get("crop_pct") or 0.0  # imagefolder runs; 0: in-memory datasets
        self.interpolation: str = data.get("interpolation") or "bilinear"
        self.transform = eval_transform(data)
        self.thresholds: list[float] | None = data.get("thresholds")  # multi-label runs: one per class
        self.data = dict(data)
        self.source = source
        self.name = name or Path(source).stem or "model"
        self.temperature = float(temperature)
        self.tta = check_tta(tta)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", tta: str | None = None) -> Predictor:
        """From a run directory, a ``best.pt``/``last.pt`` checkpoint or a ``model.safetensors``."""
        try:
            dev = select_device(device)
        except UserError as err:
            raise UserError(str(err).replace("train.device", "device")) from None
        return cls.from_run(open_run(path), dev, tta)

    @classmethod
    def from_run(cls, run: FinishedRun, device: str | torch.device = "auto", tta: str | None = None) -> Predictor:
        """From a run ``runs.finished.open_run`` opened."""
        return cls(run.model, run.data, device, str(run.source), run.name, run.temperature, tta)

    def __repr__(self) -> str:
        return f"Predictor({self.source!r}, {len(self.classes)} classes, input {self.in_chans}x{self.img_size}^2)"

    # ---- input conversion

    def image_tensor(self, image: Any) -> torch.Tensor:
        """One image (path, image file bytes, PIL image or tensor) as float ``(in_chans, H, W)`` in [0, 1], at
        its own size (the whole picture: what grids and attention maps are drawn on)."""
        from PIL import Image

        if isinstance(image, (str, Path, bytes)):
            image = read_image(image if isinstance(image, bytes) else Path(image))
        if isinstance(image, Image.Image):
            return pil_to_tensor(image, self.in_chans)
        if isinstance(image, torch.Tensor):
            return tensor_image(image, self.in_chans)
        raise UserError(f"cannot predict on a {type(image).__name__}: pass paths, image bytes, PIL images or tensors")

    def view(self, image: Any) -> torch.Tensor:
        """What the evaluation transform is given of one image (path, image file bytes, PIL image or
        tensor): the item ``vitkit eval``'s loader yields for it, which ``to_input`` turns into the model's
        input (the centre crop, or ``tta``'s views of it).

        imagefolder runs: ``eval_base``, uint8 ``(in_chans, S, S)`` with ``S = base_size(img_size,
        crop_pct)`` (a tensor is rounded to uint8 first, as a PNG of it would be); other runs: a file or PIL
        image is ``eval_view``'s whole image resized to the input (uint8, timm's ``squash``, what the
        exported folder says), a tensor is what ``image_tensor`` gives (float, own size), resized by
        ``to_input`` as evaluation resizes in-memory data."""
        from PIL import Image

        if not self.crop_pct and isinstance(image, torch.Tensor):
            return self.image_tensor(image)  # a tensor as in-memory data are: resized as evaluation resizes them
        make = eval_base if self.crop_pct else eval_view  # the base TTA cuts its views from, or the squashed input
        if isinstance(image, (str, Path, bytes)):  # decoded as a file is, bytes too
            source = image if isinstance(image, bytes) else Path(image)
            with reading(None if isinstance(source, bytes) else source):
                return make(source, self.in_chans, self.img_size, self.crop_pct, self.interpolation)
        if isinstance(image, (Image.Image, torch.Tensor)):
            return make(image, self.in_chans, self.img_size, self.crop_pct, self.interpolation)
        raise UserError(f"cannot predict on a {type(image).__name__}: pass paths, image bytes, PIL images or tensors")

    def seen(self, view: torch.Tensor) -> torch.Tensor:
        """The part of a ``view`` the model sees without ``tta`` (imagefolder runs: its centred ``img_size``
        crop, as ``eval_transform`` cuts it; other runs: all of it), to draw attention over."""
        from vitkit.data.imageio import center_crop

        return center_crop(view, self.img_size) if self.crop_pct else view

    def to_input(self, views: Sequence[torch.Tensor], tta: str | None = None) -> torch.Tensor:
        """Views (``view``) -> the model's normalised ``(B, C, S, S)`` batch on its device, by the run's
        evaluation transform (``eval_transform``), run on the device as evaluation runs it; with ``tta``
        the ``(K, B, C, S, S)`` test-time augmented views of it (``evaluation.tta.TTAViews``)."""
        from vitkit.evaluation.tta import TTAViews

        transform = TTAViews(self.transform, tta) if tta else self.transform
        labels = torch.zeros(1, dtype=torch.long, device=self.device)
        if self.crop_pct:  # all (C, S, S) uint8: one batch, exactly as evaluation's
            return transform(torch.stack(list(views)).to(self.device), labels)[0]
        return torch.cat([transform(v[None].to(self.device), labels)[0] for v in views], dim=-4)

    @property
    def multi_label(self) -> bool:
        """A multi-label model: sigmoid probabilities, every label above its threshold predicted."""
        return self.thresholds is not None

    @torch.no_grad()
    def probabilities(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``(B, classes)`` on the CPU for views (``view``) of images: calibrated by the
        run's temperature, averaged over the test-time augmented views with ``tta``; multi-label: each
        class's own sigmoid."""
        from vitkit.evaluation.tta import mean_probabilities

        inputs = self.to_input(views, self.tta)
        return mean_probabilities(self.model, inputs, self.temperature, self.multi_label).cpu()

    def topk(self, probs: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most probable labels of each image; a multi-label model: every label at or above its
        threshold (chosen on val), most probable first, ``k`` ignored."""
        if self.multi_label:
            above = probs >= torch.tensor(self.thresholds)
            return [
                sorted(((self.classes[i], float(p[i])) for i in row.nonzero().flatten().tolist()), key=lambda t: -t[1])
                for p, row in zip(probs, above, strict=True)
            ]
        values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
        return [
            [(self.classes[i], float(p)) for p, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)
        ]

    # ---- the API

    def predict(self, images: Any, topk: int = 3, batch_size: int = 64) -> list[Prediction]:
        """Classify ``images``: one or a list of paths (folders too), image file bytes, PIL images or tensors
        (or one batch).

        Returns one ``Prediction`` per image, in order; an image that cannot be read gets ``error`` set.
        """
        if topk < 1:
            raise UserError(f"topk must be >= 1, got {topk}")
        items = list(_as_items(images))
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            results += self.predict_batch(items[start : start + batch_size], topk)
        return results

    def predict_batch(self, items: Sequence[tuple[str, Any]], topk: int) -> list[Prediction]:
        """``(name, image)`` pairs -> predictions; read errors become error rows."""
        tensors, results = self.read_batch(items)
        ok = [i for i, t in enumerate(tensors) if t is not None]
        if ok:
            for i, top in zip(ok, self.topk(self.probabilities([tensors[i] for i in ok]), topk), strict=True):
                results[i].topk = top
        return results

    def read_batch(self, items: Sequence[tuple[str, Any]]) -> tuple[list[torch.Tensor | None], list[Prediction]]:
        """Views (``view``) of ``(name, image)`` pairs, ``None`` for an unreadable one; each gets an empty
        ``Prediction`` (true label from a class folder, error set for an unreadable image)."""
        tensors: list[torch.Tensor | None] = []
        results = []
        for name, image in items:
            parent = Path(name).parent.name if isinstance(image, (str, Path)) else ""
            result = Prediction(name, [], true_label=parent if parent in self.classes else None)
            try:
                tensors.append(self.view(image))
            except UserError as err:
                tensors.append(None)
                result.error = str(err)
            results.append(result)
        return tensors, results

    def attention(self, images: Any) -> list[Any]:
        """Attention rollout and last-layer attention for each image, upsampled to the image's own size.

        Returns ``AttentionMaps`` (``rollout``, ``last`` as ``(H, W)`` tensors in [0, 1]); a model whose
        attention cannot expose its weights raises ``UserError`` saying so.
        """
        from vitkit.commands.predict.attention_maps import attention_maps

        items = [image for _, image in _as_items(images)]
        sizes = [tuple(self.image_tensor(image).shape[-2:]) for image in items]
        return attention_maps(self.model, self.to_input([self.view(image) for image in items]), sizes)


def _as_items(images: Any) -> Iterable[tuple[str, Any]]:
    """``(name, image)`` pairs from one image, a list of images or a ``(B, C, H, W)`` tensor."""
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    for i, image in enumerate(images):
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            raise UserError("pass a (B, C, H, W) tensor on its own, not inside a list")
        if isinstance(image, (str, Path)) and Path(image).is_dir():
            yield from ((str(path), path) for path in collect_images([image]))
        else:
            yield (str(image) if isinstance(image, (str, Path)) else f"image[{i}]"), image
