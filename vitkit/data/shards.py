"""WebDataset tar shards: the files ``vitkit shards`` writes and ``data.dataset = "webdataset"`` reads.

A shard set is one folder: ``<split>-000000.tar, ...`` per split, ``classes.json`` (the class names in
label order) and ``_info.json``, the index timm's ``wds/`` reader expects::

    {"name": ..., "classes": [...], "splits": {"train": {"name": "train", "num_samples": N,
     "filenames": ["train-000000.tar", ...], "shard_lengths": [n0, ...],
     "class_counts": [[c0, c1, ...], ...]}, ...}}

``class_counts`` (one row per shard, images per class; single-label shards) is vitkit's own: ``data.balance``
weighs classes by it without reading the shards.

A sample is ``<key>.<jpg|png|webp>`` (the original encoded bytes; other formats re-encoded as PNG, or
every image re-encoded as JPEG when ``max_size`` shrinks it), ``<key>.cls`` (the class index as text)
and ``<key>.json`` (``{"path", "class"}``); a multi-label sample has ``<key>.labels`` (its class indices
as ``0;2``) instead of ``.cls``, and ``"class"`` lists its names. Keys are ``<split>-<position>``, so a
sample's key names its position in its split. No torch import at module level.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vitkit.errors import UserError

INFO = "_info.json"
CLASSES = "classes.json"
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # encoded bytes timm's reader also decodes
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``256MB``, ``1GiB`` or ``1000000``."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(f"--shard-size: expected a size such as 256MB or 1GB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def encoded_image(image: Any, max_size: int = 0) -> tuple[bytes, str]:
    """``(bytes, extension)`` of one image for a shard. ``image``: a file path (its bytes kept when it is a
    JPEG/PNG/WebP no larger than ``max_size`` on its long side), or a ``(C, H, W)`` tensor (PNG)."""
    from PIL import Image

    from vitkit.data.imageio import open_image, tensor_to_pil

    if not isinstance(image, (str, Path)):
        return _encode(tensor_to_pil(image), "PNG"), "png"
    with Image.open(image) as img:
        fmt, size = img.format, img.size
    if fmt in KEPT_FORMATS and (not max_size or max(size) <= max_size):
        return Path(image).read_bytes(), KEPT_FORMATS[fmt]
    img = open_image(image)  # EXIF orientation applied, as training would see it
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    if max_size and max(img.size) > max_size:
        img.thumbnail((max_size, max_size), Image.Resampling.BICUBIC)
        return _encode(img, "JPEG"), "jpg"
    return _encode(img, "PNG"), "png"


def _encode(img: Any, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: the same input, the same bytes
    tar.addfile(info, io.BytesIO(data))


@dataclass
class ShardSplit:
    """One split as written: shard file names, the samples in each and (single-label) each one's images per class."""

    name: str
    filenames: list[str]
    shard_lengths: list[int]
    class_counts: list[list[int]] | None = None

    def info(self) -> dict[str, Any]:
        info = {
            "name": self.name,
            "num_samples": sum(self.shard_lengths),
            "filenames": self.filenames,
            "shard_lengths": self.shard_lengths,
        }
        return info if self.class_counts is None else {**info, "class_counts": self.class_counts}


def write_split(
    out: Path, split: str, samples: Sequence[tuple[Any, Any, str]], classes: Sequence[str], shard_bytes: int,
    max_size: int = 0,
) -> ShardSplit:  # fmt: skip
    """Write ``samples`` (image path or tensor, label, name to record) as ``<split>-NNNNNN.tar`` shards of
    at most ``shard_bytes`` each (at least one sample per shard)."""
    written = ShardSplit(split, [], [], [])
    tar, size = None, 0
    for position, (image, label, recorded) in enumerate(samples):
        data, ext = encoded_image(image, max_size)
        multi = isinstance(label, tuple)  # multi-label: its class indices
        names = [classes[i] for i in label] if multi else classes[label]
        meta = json.dumps({"path": recorded, "class": names}).encode()
        need = len(data) + len(meta) + 3 * 1024  # three members: headers and padding
        if tar is None or (size + need > shard_bytes and written.shard_lengths[-1] > 0):
            if tar is not None:
                tar.close()
            written.filenames.append(f"{split}-{len(written.filenames):06d}.tar")
            written.shard_lengths.append(0)
            written.class_counts.append([0] * len(classes))
            tar, size = tarfile.open(out / written.filenames[-1], "w", format=tarfile.USTAR_FORMAT), 1024  # noqa: SIM115 (one shard after another)
        key = f"{split}-{position:08d}"
        _add(tar, f"{key}.{ext}", data)
        if multi:
            _add(tar, f"{key}.labels", ";".join(map(str, label)).encode())
        else:
            _add(tar, f"{key}.cls", str(label).encode())
            written.class_counts[-1][label] += 1
        _add(tar, f"{key}.json", meta)
        size += need
        written.shard_lengths[-1] += 1
    if tar is not None:
        tar.close()
    if any(isinstance(label, tuple) for _, label, _ in samples):
        written.class_counts = None  # multi-label: no images-per-class rows
    return written


def write_index(out: Path, name: str, classes: Sequence[str], splits: Sequence[ShardSplit], source: str) -> None:
    """``classes.json`` and ``_info.json`` of a shard set."""
    (out / CLASSES).write_text(json.dumps(list(classes), indent=1) + "\n")
    info = {"name": name, "source": source, "classes": list(classes), "splits": {s.name: s.info() for s in splits}}
    (out / INFO).write_text(json.dumps(info, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ reading


@dataclass
class Shards:
    """The shards of one split, in order, with the samples in each (from ``_info.json``)."""

    urls: list[str]
    lengths: list[int]
    reader: Any = None  # url -> its raw samples; ``None``: a WebDataset tar (``read_shard``)
    class_counts: list[list[int]] | None = None  # per shard, images per class (``None``: not recorded)

    @property
    def num_samples(self) -> int:
        return sum(self.lengths)

    def read(self, url: str) -> Iterator[dict[str, Any]]:
        """The raw samples of shard ``url``, in order."""
        return (self.reader or read_shard)(url)


def expand(pattern: str | Sequence[str], root: Path) -> list[str]:
    """Shard URLs of a brace pattern (``train-{000000..000009}.tar``) or a list; relative local paths are
    taken from ``root``."""
    from braceexpand import braceexpand

    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    urls = [url for p in patterns for url in braceexpand(str(p))]
    return [u if re.match(r"^[a-z]+:", u) or Path(u).is_absolute() else str(root / u) for u in urls]


def _read_json(url: str) -> Any:
    """A JSON file beside the shards (local or anything ``webdataset.gopen`` opens), or ``None``."""
    try:
        if re.match(r"^[a-z]+:", url) and not url.startswith("file:"):
            from webdataset import gopen

            with gopen(url) as f:
                return json.loads(f.read())
        path = Path(url.removeprefix("file:"))
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def shard_index(urls: list[str], split: str) -> tuple[Shards, list[str] | None]:
    """The split's shards with their sample counts from the ``_info.json`` beside them, and the class names
    (``classes.json``); a shard the index does not list is a ``UserError`` (the epoch length must be known)."""
    if not urls:
        raise UserError(f"webdataset: data.{split} names no shards")
    folder = _parent(urls[0])
    info = _read_json(f"{folder}/{INFO}") or {}
    counts: dict[str, int] = {}
    per_class: dict[str, list[int]] = {}
    for entry in info.get("splits", {}).values():
        counts.update(zip(entry.get("filenames", []), entry.get("shard_lengths", []), strict=False))
        per_class.update(zip(entry.get("filenames", []), entry.get("class_counts") or [], strict=False))
    missing = [u for u in urls if u.rsplit("/", 1)[-1] not in counts]
    if missing:
        where = f"{folder}/{INFO}" if info else f"no {INFO} beside them ({folder})"
        raise UserError(
            f"webdataset: data.{split}: the sample count of {missing[0]} is unknown ({where}); "
            f"write shards with `vitkit shards`, or add the shard to _info.json's shard_lengths"
        )
    classes = _read_json(f"{folder}/{CLASSES}") or info.get("classes")
    names = [u.rsplit("/", 1)[-1] for u in urls]
    recorded = [per_class.get(n) for n in names]  # kept only when every shard's rows add up to its length
    if any(row is None or sum(row) != counts[n] for row, n in zip(recorded, names, strict=True)):
        recorded = None
    return Shards(urls, [counts[n] for n in names], class_counts=recorded), classes


def read_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard, in order: dicts of ``__key__`` and one entry per extension (bytes)."""
    from webdataset.tariterators import tarfile_samples

    yield from tarfile_samples([{"url": url}])


@functools.cache
def image_entries() -> tuple[str, ...]:
    """The extensions a sample's image entry may have: those of ``vitkit.data.imageio.IMAGE_SUFFIXES`` (the
    one list of image suffixes) whose format a shard holds as its own bytes (``KEPT_FORMATS``, what timm's
    ``wds/`` reader decodes too; ``encoded_image`` re-encodes every other format as PNG): jpg, jpeg, png, webp."""
    from PIL import Image

    from vitkit.data.imageio import IMAGE_SUFFIXES

    formats = Image.registered_extensions()  # ".jpeg" -> "JPEG", ...
    return tuple(suffix[1:] for suffix in IMAGE_SUFFIXES if formats.get(suffix) in KEPT_FORMATS)


def sample_image(sample: dict[str, Any]) -> bytes:
    """The encoded image of a sample (its ``image_entries`` entry: jpg, jpeg, png or webp)."""
    for ext in image_entries():
        if ext in sample:
            return sample[ext]
    raise UserError(f"webdataset: sample {sample.get('__key__')} in {sample.get('__url__')} has no image")
