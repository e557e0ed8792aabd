"""``data.dataset = "webdataset"``: train from WebDataset tar shards (``vitkit shards`` writes them).

``data.train``, ``data.val`` and ``data.test`` name each split's shards: a brace pattern
(``"shards/train-{000000..000012}.tar"``) or a list, relative to ``data.root`` unless absolute
(anything ``webdataset.gopen`` opens, such as ``pipe:`` commands and http(s) URLs, is passed on as
is). The ``_info.json`` beside the shards gives every shard's sample count (the exact epoch length)
and ``classes.json`` the class names. Images decode in the DataLoader workers to the folder path's
base images; crops, flips and augmentations are batched on the device as for folders
(``vitkit.data.stream`` has the rank and worker plan).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitkit.data.datasets import IMAGENET_MEAN, IMAGENET_STD, DataSplits, ImageDataset, ImageSet
from vitkit.errors import UserError
from vitkit.registry import register_dataset


@register_dataset("webdataset")
class WebDataset(ImageDataset):
    """WebDataset tar shards (``data.train``/``val``/``test`` patterns, ``_info.json`` counts), streamed
    with an exact epoch on every rank; ``vitkit shards`` writes them."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        img_size: int,
        train: str | list = "",
        val: str | list = "",
        test: str | list = "",
        shuffle: int = 1000,
        in_chans: int = 3,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        **kwargs: Any,
    ) -> None:
        super().__init__(img_size, **kwargs)
        from vitkit.extras import require

        require("data", "webdataset", what='data.dataset = "webdataset"')
        from vitkit.data.imageio import base_size

        self.patterns = {"train": train, "val": val, "test": test}
        missing = [name for name, pattern in self.patterns.items() if not pattern]
        if missing:
            raise UserError(
                f"webdataset: set data.{missing[0]} to the {missing[0]} shards (a brace pattern such as "
                f'"shards/{missing[0]}-{{000000..000003}}.tar", or a list); `vitkit shards` writes all three'
            )
        self.shuffle, self.in_chans, self.crop_pct, self.interpolation = shuffle, in_chans, crop_pct, interpolation
        self.base_size = base_size(img_size, crop_pct)
        if in_chans == 1:
            self.mean, self.std = (0.5,), (0.5,)

    def load(self) -> DataSplits:
        from vitkit.data.shards import expand, shard_index
        from vitkit.data.stream import ShardStream

        sets, classes = {}, None
        for name, pattern in self.patterns.items():
            shards, found = shard_index(expand(pattern, Path(self.root)), name)
            if classes is None or (found and len(found) > len(classes)):
                classes = found
            stream = ShardStream(
                shards, self.base_size, self.in_chans, self.interpolation, self.shuffle, name, crop=self.img_size
            )
            sets[name] = ImageSet(files=stream)
        if not classes:
            raise UserError("webdataset: no classes.json (or classes in _info.json) beside the shards")
        self.classes = list(classes)
        from vitkit.data.shards import read_shard

        multi = "labels" in next(read_shard(sets["train"].files.shards.urls[0]), {})  # multi-label shards
        for split in sets.values():
            split.files.multi_label, split.files.num_classes = multi, len(self.classes)
        out = self._splits(sets["train"], sets["val"], sets["test"])
        out.crop_pct = self.crop_pct
        return out
