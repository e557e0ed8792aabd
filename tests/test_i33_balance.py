"""Issue 33.6 and 33.7: ``data.balance`` is the training loader's answer. ``sampler`` draws classes evenly
through the real loader a recipe builds (a loaded and a streamed Hugging Face dataset, WebDataset shards),
``loss`` weights classes by the counts the loader gives (for shards: ``_info.json``'s), and a loader that
cannot balance says so in one line (exit 2). Data is generated in tmp_path; nothing is downloaded."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import pytest

from .photos import draw_photo, make_photo_folder

HF_RECIPE = """
name = "bal"
seed = 1
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "hf"
root = "ROOT"
batch_size = 8
[train]
epochs = 1
[output]
dir = "OUT"
"""
SHARD_RECIPE = """
name = "bal"
seed = 1
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "webdataset"
root = "SHARDS"
train = TRAIN
val = VAL
test = TEST
batch_size = 4
[train]
epochs = 1
[output]
dir = "OUT"
"""


def _hf_dataset(folder: Path) -> Path:
    """A saved dataset whose train split holds 80 images of class a and 16 of b (the issue's numbers)."""
    import datasets

    datasets.disable_progress_bars()
    rng = random.Random(0)

    def split(labels: list[int]) -> datasets.Dataset:
        images = [draw_photo(("disc", "square")[c], rng.randint(16, 24), rng.randint(16, 24), rng) for c in labels]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    train = [0] * 80 + [1] * 16
    random.Random(1).shuffle(train)
    splits = {"train": split(train), "validation": split([0, 1] * 4), "test": split([0, 1] * 4)}
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """An imbalanced folder (60 discs, 12 squares) written as several shards per split by `vitkit shards`."""
    from vitkit.cli import main

    base = tmp_path_factory.mktemp("balance")
    photos = make_photo_folder(base / "photos", classes=2, per_class=60, min_size=16, max_size=28)
    for extra in sorted((photos / "square").glob("*.jpg"))[12:]:
        extra.unlink()
    assert main(["shards", str(photos), "--out", str(base / "shards"), "--shard-size", "40KB"]) == 0
    return base / "shards"


def _shard_recipe(tmp_path: Path, shards: Path) -> Path:
    info = json.loads((shards / "_info.json").read_text())
    text = SHARD_RECIPE.replace("SHARDS", shards.as_posix()).replace("OUT", (tmp_path / "runs").as_posix())
    for name in ("train", "val", "test"):
        text = text.replace(name.upper(), json.dumps(info["splits"][name]["filenames"]))
    path = tmp_path / "wds.toml"
    path.write_text(text)
    return path


def _shard_labels(shards: Path, split: str = "train") -> list[int]:
    """The class of every sample of a split, in shard order (the split index the sample log records)."""
    labels = []
    for filename in json.loads((shards / "_info.json").read_text())["splits"][split]["filenames"]:
        with tarfile.open(shards / filename) as tar:
            labels += [int(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".cls")]
    return labels


def _logged(log: Path, pattern: str) -> list[int]:
    return [int(line) for path in sorted(log.glob(pattern)) for line in path.read_text().split()]


def _summary(tmp_path: Path) -> dict:
    (run_dir,) = (tmp_path / "runs" / "bal").iterdir()
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("streaming", [False, True])
def test_i33_7_balance_sampler_draws_classes_evenly_loaded_and_streamed_hf(tmp_path, cli, monkeypatch, streaming):
    """80 a / 16 b: the class-b share of one epoch's training draws is about a half, loaded or streamed
    (it was 0.167 streamed: the weights were never used), and a streamed epoch is still 96 draws."""
    from vitkit.engine.build import load_dataset, model_img_size
    from vitkit.recipe import load_recipe

    root = _hf_dataset(tmp_path / "hfds")
    recipe = tmp_path / "hf.toml"
    text = HF_RECIPE.replace("ROOT", root.as_posix()).replace("OUT", (tmp_path / "runs").as_posix())
    data = f'batch_size = 8\nstreaming = {str(streaming).lower()}\nbalance = "sampler"'
    recipe.write_text(text.replace("batch_size = 8", data))
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv("VITKIT_TEST_SAMPLE_LOG", str(log))
    code, _, err = cli("run", recipe, "--threads", "1")
    assert code == 0, err
    loaded = load_recipe(recipe)
    targets = load_dataset(loaded, model_img_size(loaded)).train.targets()  # split index -> class
    assert sorted(targets) == [0] * 80 + [1] * 16
    drawn = [targets[i] for i in _logged(log, "train-epoch1-rank0*.txt")]
    assert len(drawn) == 96  # one epoch: as many draws as images
    share = drawn.count(1) / len(drawn)
    assert 0.35 < share < 0.65, f"class-b share of training draws {share:.3f} (streaming={streaming}), not ~0.5"
    assert _summary(tmp_path)["balance"] == {
        "mode": "sampler",
        "class_counts": {"a": 80, "b": 16},
        "class_weights": {"a": round(1 / 80, 6), "b": round(1 / 16, 6)},
    }


def test_i33_6_shards_balance_sampler_draws_classes_evenly(tmp_path, cli, monkeypatch, shard_set):
    """``data.balance = "sampler"`` on shards (several per split, 2 workers): one epoch's draws are the
    split's size and about half of them squares (the minority class), not a traceback."""
    labels = _shard_labels(shard_set)
    assert labels.count(1) / len(labels) < 0.2  # imbalanced: ~5 discs per square
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv("VITKIT_TEST_SAMPLE_LOG", str(log))
    code, _, err = cli("run", _shard_recipe(tmp_path, shard_set), "--threads", "1", "--set", 'data.balance="sampler"')
    assert code == 0, err
    drawn = [labels[i] for i in _logged(log, "train-epoch1-rank0-worker*.txt")]
    assert len(drawn) == len(labels) - len(labels) % 8  # an exact epoch: the draws of its whole batches of 8
    share = drawn.count(1) / len(drawn)
    assert 0.3 < share < 0.7, f"square share of training draws {share:.3f}, not ~0.5"


def test_i33_6_shards_balance_loss_weights_from_info_json_counts(tmp_path, cli, shard_set):
    """``data.balance = "loss"`` on shards weights each class by mean count / its count, the counts being the
    ones `vitkit shards` recorded in _info.json (those of the tars' labels)."""
    labels = _shard_labels(shard_set)
    info = json.loads((shard_set / "_info.json").read_text())["splits"]["train"]
    assert [sum(row) for row in info["class_counts"]] == info["shard_lengths"]
    counts = [labels.count(0), labels.count(1)]
    assert [sum(column) for column in zip(*info["class_counts"], strict=True)] == counts
    code, _, err = cli("run", _shard_recipe(tmp_path, shard_set), "--threads", "1", "--set", 'data.balance="loss"')
    assert code == 0, err
    mean = sum(counts) / 2
    assert _summary(tmp_path)["balance"] == {
        "mode": "loss",
        "class_counts": {"disc": counts[0], "square": counts[1]},
        "class_weights": {"disc": round(mean / counts[0], 6), "square": round(mean / counts[1], 6)},
    }


def test_i33_6_weighted_stream_keeps_the_rank_and_worker_plan(shard_set):
    """The weighted stream is one sequence of N draws per epoch, cut between ranks and workers as samples
    are: 2 ranks x 3 workers draw exactly what 1 rank x 1 worker draws, each rank the same count."""
    from collections import Counter

    from vitkit.data.shards import expand, shard_index
    from vitkit.data.stream import ShardStream

    info = json.loads((shard_set / "_info.json").read_text())
    shards, _ = shard_index(expand(info["splits"]["train"]["filenames"], shard_set), "train")
    n = shards.num_samples

    def draws(rank: int, world: int, workers: int, epoch: int) -> list[int]:
        stream = ShardStream(shards, 20, 3)
        stream.train, stream.batch_size, stream.seed, stream.epoch = True, 4, 3, epoch
        stream.rank, stream.world_size, stream.class_weights = rank, world, [1 / 48, 1 / 10]
        return [i for k in range(workers) for i, _ in stream._samples(stream.worker_positions(k, workers))]

    labels = _shard_labels(shard_set)
    assert n == len(labels) and n % 2 == 0 and len(shards.urls) > 2
    for epoch in (1, 2):
        whole = draws(0, 1, 1, epoch)
        ranks = [draws(r, 2, 3, epoch) for r in (0, 1)]
        per_rank = n // 2 - (n // 2) % 4  # whole batches of 4 (the last partial batch is dropped, shares.train_used)
        assert len(whole) == n - n % 4 and len(ranks[0]) == len(ranks[1]) == per_rank
        # the ranks split one sequence of draws: they share all of it but the few draws each plan drops
        common = sum((Counter(ranks[0]) + Counter(ranks[1]) & Counter(whole)).values())
        assert common >= len(whole) - 4
        assert max(Counter(whole).values()) > 1  # drawn with replacement
        share = [labels[i] for i in whole].count(1) / n
        assert 0.3 < share < 0.7, f"square share of the weighted stream's draws {share:.3f}, not ~0.5"
    assert draws(0, 1, 1, 1) != draws(0, 1, 1, 2)  # new draws every epoch, from (seed, epoch) only
    assert draws(0, 1, 1, 1) == draws(0, 1, 1, 1)


def test_i33_6_shards_without_recorded_class_counts_are_one_line(tmp_path, cli, shard_set):
    """Shards whose _info.json has no class_counts (another writer, an older vitkit): one line, exit 2."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(shard_set, old)
    info = json.loads((old / "_info.json").read_text())
    for split in info["splits"].values():
        split.pop("class_counts")
    (old / "_info.json").write_text(json.dumps(info))
    for mode in ("sampler", "loss"):
        code, _, err = cli("run", _shard_recipe(tmp_path, old), "--threads", "1", "--set", f'data.balance="{mode}"')
        assert code == 2 and err.count("\n") == 1, err
        assert "class_counts" in err and "vitkit shards" in err and "Traceback" not in err


LISTLESS = """
import torch

import vitkit
from vitkit.data.datasets import DataSplits, ImageDataset, ImageSet


class Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, item):  # training: (epoch, index)
        index = item[1] if isinstance(item, tuple) else item
        return torch.zeros(3, 16, 16, dtype=torch.uint8), index % 2


@vitkit.register_dataset("listless")
class Listless(ImageDataset):
    classes = ["a", "b"]

    def load(self):
        return DataSplits(ImageSet(files=Rows()), ImageSet(files=Rows()), ImageSet(files=Rows()), self.classes, 3,
                          self.mean, self.std)
"""


def test_i33_7_a_loader_that_cannot_balance_says_so_in_one_line(tmp_path, cli):
    """A dataset whose files do not list their classes: data.balance is one line, exit 2, never ignored
    and never a traceback; without data.balance it trains."""
    (tmp_path / "listless.py").write_text(LISTLESS)
    recipe = tmp_path / "r.toml"
    text = HF_RECIPE.replace('"hf"', '"listless"').replace("ROOT", "x").replace("OUT", (tmp_path / "runs").as_posix())
    recipe.write_text('plugins = ["listless.py"]\n' + text.replace("batch_size = 8", "batch_size = 8\nnum_workers = 0"))
    for mode in ("sampler", "loss"):
        code, _, err = cli("run", recipe, "--threads", "1", "--set", f'data.balance="{mode}"')
        assert code == 2 and err.count("\n") == 1, err
        assert "does not list its images' classes" in err and "data.balance" in err
    code, _, err = cli("run", recipe, "--threads", "1")
    assert code == 0, err
