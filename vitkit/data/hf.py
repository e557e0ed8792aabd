"""``data.dataset = "hf"``: a Hugging Face dataset as the data of a run.

``data.root`` names it: a folder written by ``save_to_disk``, Parquet or Arrow files (a file, a glob
or a folder of them), or a Hub name (``org/name``, through the Hugging Face cache, so it works offline
once cached: ``HF_DATASETS_OFFLINE=1``). ``data.image_key`` and ``data.label_key`` name the columns;
``data.train``/``val``/``test`` the splits (default ``train``; ``validation``/``val``/``valid``;
``test``), and a missing val or test split is carved from train, stratified, as for folders
(``vitkit.data.folder.make_splits``). Class names come from a ``ClassLabel`` feature (else the sorted
label values). A label column of lists (``List(ClassLabel)`` or lists of names) makes the data
multi-label (``vitkit.data.multilabel``). Rows decode in the DataLoader workers to the folder path's base images.
``data.streaming = true`` streams the splits shard by shard through ``data.stream.ShardStream`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vitkit.data.datasets import IMAGENET_MEAN, IMAGENET_STD, DataSplits, ImageDataset, ImageFiles, ImageSet
from vitkit.errors import UserError
from vitkit.registry import register_dataset

VAL_NAMES = ("validation", "val", "valid")
DATA_SUFFIXES = {".parquet": "parquet", ".arrow": "arrow"}


class DatasetRows(ImageFiles):
    """Rows of Hugging Face dataset splits as base images: a sample's source is ``(split, row)``."""

    def __init__(self, tables: dict[str, Any], image_key: str, samples: list, base_size: int, in_chans: int,
                 interpolation: str = "bilinear", crop: int | None = None) -> None:  # fmt: skip
        super().__init__(samples, base_size, in_chans, interpolation, crop)
        self.tables, self.image_key = tables, image_key

    def base(self, source: tuple[str, int]) -> torch.Tensor:
        import io

        from vitkit.data.imageio import base_image, open_image

        split, row = source
        image = self.tables[split][row][self.image_key]
        if isinstance(image, dict):  # an undecoded Image feature: {"bytes", "path"}
            image = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        if not hasattr(image, "convert"):
            image = open_image(image, "L" if self.in_chans == 1 else "RGB")
        return base_image(image, self.in_chans, self.base_size, self.interpolation, self.crop)


def open_dataset(root: str, streaming: bool = False) -> dict[str, Any]:
    """The splits of ``root`` (see the module doc) as ``{name: datasets.Dataset}``; ``streaming``: as
    ``datasets.IterableDataset`` (a ``save_to_disk`` folder streams its Arrow shards)."""
    import datasets

    path = Path(root)
    stream = {"streaming": True} if streaming else {}
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
            if streaming:
                splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
                return {
                    name: table.to_iterable_dataset(num_shards=_arrow_shards(table)) for name, table in splits.items()
                }
        elif path.is_dir() and (files := [f for f in sorted(path.rglob("*")) if f.suffix in DATA_SUFFIXES]):
            loaded = datasets.load_dataset(DATA_SUFFIXES[files[0].suffix], data_dir=str(path), **stream)
        elif Path(root.split("*")[0]).suffix in DATA_SUFFIXES or root.endswith(tuple(DATA_SUFFIXES)):
            loaded = datasets.load_dataset(DATA_SUFFIXES[Path(root).suffix], data_files={"train": root}, **stream)
        elif path.exists():
            raise UserError(f"hf: {root} is neither a save_to_disk folder nor Parquet/Arrow files")
        else:
            loaded = datasets.load_dataset(root, **stream)  # a Hub name, through the HF cache
    except UserError:
        raise
    except Exception as err:  # datasets raises many kinds: missing, offline, bad files
        raise UserError(
            f"hf: cannot load {root}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return dict(loaded)
    return {"train": loaded}


def _arrow_shards(table: Any) -> int:
    """How many shards a saved split streams as: its Arrow files (``to_iterable_dataset``'s natural cut)."""
    return max(1, len(getattr(table, "cache_files", None) or []))


class StreamedRows:
    """``Shards.reader`` for a streamed Hugging Face split: shard ``url`` (its index) of the split as the raw
    samples ``ShardStream`` decodes (``jpg``: the encoded image, ``cls`` or ``labels``), only the rows
    ``keep`` lists for that shard (a split carved from another), images never decoded here."""

    def __init__(self, root: str, split: str, image_key: str, label_key: str, index: dict[Any, int],
                 multi: bool, keep: list[list[int]]) -> None:  # fmt: skip
        self.root, self.split, self.image_key, self.label_key = root, split, image_key, label_key
        self.index, self.multi, self.keep = index, multi, keep

    def __call__(self, url: str) -> Iterator[dict[str, Any]]:
        import datasets

        table = open_dataset(self.root, streaming=True)[self.split]
        table = table.cast_column(self.image_key, datasets.Image(decode=False))
        shard, wanted = int(url), set(self.keep[int(url)])
        # .iter(): plain iteration inside a DataLoader worker would hand this worker only its share of the
        # shards (datasets' own worker split); ShardStream has already chosen what each worker reads
        batches = table.shard(num_shards=table.n_shards, index=shard).iter(batch_size=64)
        items = (
            (image, value)
            for batch in batches
            for image, value in zip(batch[self.image_key], batch[self.label_key], strict=True)
        )
        for row, (image, value) in enumerate(items):
            if row not in wanted:
                continue
            sample = {"__key__": f"{self.split}/{shard}/{row}", "jpg": _image_bytes(image)}
            if self.multi:
                sample["labels"] = ";".join(str(i) for i in sorted({self.index[v] for v in value})).encode()
            else:
                sample["cls"] = self.index[value]
            yield sample


def _image_bytes(image: dict[str, Any]) -> bytes:
    """The encoded bytes of an undecoded ``Image`` value (``{"bytes", "path"}``)."""
    if image.get("bytes"):
        return image["bytes"]
    return Path(image["path"]).read_bytes()


@register_dataset("hf")
class HuggingFace(ImageDataset):
    """A Hugging Face dataset: ``data.root`` = Hub name, ``save_to_disk`` folder or Parquet/Arrow files;
    ``data.image_key``/``label_key`` columns; missing val/test carved from train."""

    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(
        self,
        img_size: int,
        train: str | list = "",
        val: str | list = "",
        test: str | list = "",
        image_key: str = "image",
        label_key: str = "label",
        test_fraction: float = 0.1,
        split_seed: int = 0,
        in_chans: int = 3,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        streaming: bool = False,
        shuffle: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(img_size, **kwargs)
        from vitkit.data.imageio import base_size
        from vitkit.extras import require

        require("data", "datasets", what='data.dataset = "hf"')
        self.streaming, self.shuffle = streaming, shuffle
        for key, value in (("train", train), ("val", val), ("test", test)):
            if not isinstance(value, str):
                raise UserError(f"hf: data.{key} names one split of the dataset, got {value!r}")
        self.names = {"train": train, "val": val, "test": test}
        self.image_key, self.label_key = image_key, label_key
        self.test_fraction, self.split_seed = test_fraction, split_seed
        self.in_chans, self.crop_pct, self.interpolation = in_chans, crop_pct, interpolation
        self.base_size = base_size(img_size, crop_pct)
        if in_chans == 1:
            self.mean, self.std = (0.5,), (0.5,)

    def _split_names(self, tables: dict[str, Any]) -> dict[str, str]:
        """Which of the dataset's splits serves as train, val and test (missing ones left out)."""
        defaults = {"train": ("train",), "val": VAL_NAMES, "test": ("test",)}
        chosen = {}
        for name, given in self.names.items():
            if given and given not in tables:
                raise UserError(f"hf: data.{name} = {given!r} is not a split of {self.root} ({', '.join(tables)})")
            found = given or next((n for n in defaults[name] if n in tables), "")
            if found:
                chosen[name] = found
        if "train" not in chosen:
            raise UserError(f"hf: {self.root} has no train split ({', '.join(tables)}); set data.train")
        return chosen

    def _multi_label(self, table: Any) -> bool:
        """Whether the label column holds a list of labels per row (``List``/``Sequence`` feature)."""
        return hasattr(table.features.get(self.label_key), "feature")

    def _classes(self, table: Any, column: list | None = None) -> tuple[list[str], dict[Any, int]]:
        """Class names and the label value -> class index map (a ClassLabel's names, else sorted values;
        multi-label: of the lists' items). ``column``: the label values, where the table cannot give them."""
        feature = table.features.get(self.label_key)
        multi = self._multi_label(table)
        names = getattr(feature.feature if multi else feature, "names", None)
        if names:
            return list(names), {i: i for i in range(len(names))}
        column = table[self.label_key] if column is None else column
        values = sorted({v for row in column for v in row} if multi else set(column), key=str)
        return [str(v) for v in values], {v: i for i, v in enumerate(values)}

    def _check_columns(self, tables: dict[str, Any], chosen: dict[str, str]) -> None:
        for split in chosen.values():
            columns = tables[split].column_names or []
            missing = [k for k in (self.image_key, self.label_key) if k not in columns]
            if missing:
                raise UserError(f"hf: split {split!r} has no column {missing[0]!r} ({', '.join(columns)}); set "
                                "data.image_key and data.label_key")  # fmt: skip

    def _targets(self, split: str, labels: list, index: dict[Any, int], multi: bool) -> list[Any]:
        """Each row's class index (multi-label: sorted tuple of them), checked against the train classes."""
        unknown = [v for value in labels for v in (value if multi else [value]) if v not in index]
        if unknown:
            raise UserError(f"hf: split {split!r} has label {unknown[0]!r}, not among the train split's classes")
        if multi and any(not value for value in labels):
            raise UserError(f"hf: split {split!r} has a row with no labels; give every image at least one")
        return [tuple(sorted({index[v] for v in value})) if multi else index[value] for value in labels]

    def _load_streamed(self) -> DataSplits:
        """``data.streaming``: every split streamed by its shards through ``data.stream.ShardStream`` (the plan
        shards use: each rank and worker its own samples, exact epochs, the same steps on every rank). One
        pass over the label column counts each shard's rows and carves a missing val or test split."""
        from vitkit.data.folder import make_splits
        from vitkit.data.shards import Shards
        from vitkit.data.stream import ShardStream

        tables = open_dataset(str(self.root), streaming=True)
        chosen = self._split_names(tables)
        self._check_columns(tables, chosen)
        labels: dict[str, list[list[Any]]] = {}  # source split -> each shard's label values, in row order
        for split in set(chosen.values()):
            column = tables[split].select_columns([self.label_key])
            shards = range(column.n_shards)
            labels[split] = [[row[self.label_key] for row in column.shard(column.n_shards, i)] for i in shards]
        train = tables[chosen["train"]]
        self.classes, index = self._classes(train, [v for shard in labels[chosen["train"]] for v in shard])
        multi = self._multi_label(train)
        found = {}
        for name, split in chosen.items():
            places = [(split, shard, row) for shard, values in enumerate(labels[split]) for row in range(len(values))]
            targets = self._targets(split, [v for values in labels[split] for v in values], index, multi)
            found[name] = list(zip(places, targets, strict=True))
        splits = make_splits(found, self.classes, self.val_fraction, self.test_fraction, self.split_seed)
        sets = {}
        for name in ("train", "val", "test"):
            source = chosen.get(name, chosen["train"])  # a carved split streams from train's shards
            keep: list[list[int]] = [[] for _ in labels[source]]
            target_of = {}
            for (_, shard, row), target in splits[name]:
                keep[shard].append(row)
                target_of[shard, row] = target
            keep = [sorted(rows) for rows in keep]
            reader = StreamedRows(str(self.root), source, self.image_key, self.label_key, index, multi, keep)
            per_class = None  # each shard's images per class: what data.balance weighs
            if not multi:
                per_class = [[0] * len(self.classes) for _ in keep]
                for (shard, _), target in target_of.items():
                    per_class[shard][target] += 1
            shards = Shards([str(i) for i in range(len(keep))], [len(rows) for rows in keep], reader, per_class)
            stream = ShardStream(
                shards, self.base_size, self.in_chans, self.interpolation, self.shuffle, name, crop=self.img_size
            )
            stream.multi_label, stream.num_classes = multi, len(self.classes)
            stream.samples = [((source, s, r), target_of[s, r]) for s, rows in enumerate(keep) for r in rows]
            sets[name] = ImageSet(files=stream)
        out = self._splits(sets["train"], sets["val"], sets["test"])
        out.crop_pct = self.crop_pct
        carved = [name for name in ("val", "test") if name not in chosen]
        if carved:
            out.notes.append(f"hf: {' and '.join(carved)} carved from {chosen['train']!r}, stratified (streamed)")
        return out

    def load(self) -> DataSplits:
        from vitkit.data.folder import make_splits

        if self.streaming:
            return self._load_streamed()
        tables = open_dataset(str(self.root))
        chosen = self._split_names(tables)
        self._check_columns(tables, chosen)
        self.classes, index = self._classes(tables[chosen["train"]])
        multi = self._multi_label(tables[chosen["train"]])
        found = {}
        for name, split in chosen.items():
            targets = self._targets(split, tables[split][self.label_key], index, multi)
            found[name] = [((split, row), target) for row, target in enumerate(targets)]
        splits = make_splits(found, self.classes, self.val_fraction, self.test_fraction, self.split_seed)
        used = {split: tables[split] for split in chosen.values()}

        def split_set(samples: list) -> ImageSet:
            rows = DatasetRows(
                used, self.image_key, samples, self.base_size, self.in_chans, self.interpolation, self.img_size
            )
            rows.num_classes = len(self.classes)  # multi-label tuples become multi-hot rows
            return ImageSet(files=rows)

        out = self._splits(*(split_set(splits[name]) for name in ("train", "val", "test")))
        out.crop_pct = self.crop_pct
        carved = [name for name in ("val", "test") if name not in chosen]
        if carved:
            out.notes.append(f"hf: {' and '.join(carved)} carved from {chosen['train']!r}, stratified")
        return out
