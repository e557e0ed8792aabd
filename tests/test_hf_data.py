"""Issue 26.3: ``data.dataset = "hf"`` trains from a Hugging Face dataset built from generated images
and written with ``save_to_disk`` (nothing downloaded): classes from its ClassLabel, its test split
kept, val carved from train; under torchrun, ranks train on disjoint, equal shares of the whole split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from .conftest import torchrun_vitkit
from .photos import draw_photo

SHAPES = ["disc", "square", "triangle"]
RECIPE = """
name = "hf"
seed = 1
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "hf"
root = "ROOT"
image_key = "picture"
label_key = "shape"
batch_size = 8
[train]
epochs = 1
[output]
dir = "OUT"
"""


def _saved_dataset(folder: Path) -> Path:
    import datasets

    datasets.disable_progress_bars()  # stderr holds vitkit's own lines only
    rng = random.Random(0)

    def split(n: int) -> datasets.Dataset:
        labels = [i % 3 for i in range(n)]
        images = [draw_photo(SHAPES[c], rng.randint(20, 40), rng.randint(20, 40), rng) for c in labels]
        features = datasets.Features({"picture": datasets.Image(), "shape": datasets.ClassLabel(names=SHAPES)})
        return datasets.Dataset.from_dict({"picture": images, "shape": labels}, features=features)

    datasets.DatasetDict({"train": split(30), "test": split(9)}).save_to_disk(str(folder))
    return folder


def test_i26_3_hf_saved_dataset_trains(tmp_path, cli):
    root = _saved_dataset(tmp_path / "hfds")
    recipe = tmp_path / "hf.toml"
    recipe.write_text(RECIPE.replace("ROOT", root.as_posix()).replace("OUT", (tmp_path / "runs").as_posix()))
    code, out, err = cli("run", recipe)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "hf").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 27, "val": 3, "test": 9}  # val carved (10%), test kept
    assert summary["data"]["class_counts"]["test"] == {name: 3 for name in SHAPES}  # names from ClassLabel
    report = json.loads((run_dir / "report_test.json").read_text())
    assert report["count"] == 9 and [row["class"] for row in report["per_class"]] == SHAPES


def test_i26_3_hf_missing_column_is_one_line(tmp_path, cli):
    root = _saved_dataset(tmp_path / "hfds")
    recipe = tmp_path / "hf.toml"
    text = RECIPE.replace("ROOT", root.as_posix()).replace("OUT", (tmp_path / "runs").as_posix())
    recipe.write_text(text.replace('label_key = "shape"', 'label_key = "label"'))
    code, _, err = cli("run", recipe)
    assert code == 2 and "no column 'label'" in err and err.count("\n") == 1


@pytest.mark.parametrize("kind", ["parquet"])
def test_i26_3_hf_parquet_files_train(tmp_path, cli, kind):
    import datasets

    saved = _saved_dataset(tmp_path / "hfds")
    loaded = datasets.load_from_disk(str(saved))
    (tmp_path / "pq").mkdir()
    loaded["train"].to_parquet(str(tmp_path / "pq" / "train.parquet"))
    recipe = tmp_path / "hf.toml"
    text = RECIPE.replace("ROOT", (tmp_path / "pq" / "train.parquet").as_posix())
    recipe.write_text(text.replace("OUT", (tmp_path / "runs").as_posix()))
    code, _, err = cli("run", recipe)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "hf").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sum(summary["split_sizes"].values()) == 30 and summary["split_sizes"]["test"] == 3  # both carved


def _torchrun_two_epochs(tmp_path: Path, root: Path, data: str = "batch_size = 8") -> tuple[Path, Path]:
    """A 2-epoch, 2-process run on ``root`` with the ``data`` lines given; (sample log folder, run dir)."""
    recipe = tmp_path / "hf.toml"
    text = RECIPE.replace("ROOT", root.as_posix()).replace("OUT", (tmp_path / "runs").as_posix())
    recipe.write_text(text.replace("epochs = 1", "epochs = 2").replace("batch_size = 8", data))
    log = tmp_path / "log"
    log.mkdir()
    done = torchrun_vitkit(["run", recipe], VITKIT_TEST_SAMPLE_LOG=str(log))
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "hf").iterdir()
    return log, run_dir


@pytest.mark.slow
def test_i26_2_torchrun_on_an_hf_dataset_gives_ranks_disjoint_equal_shares_of_the_whole_split(tmp_path):
    """Two processes (gloo) on a saved Hugging Face dataset: per epoch each rank's training images are
    disjoint, the same count on both, together the whole split; the test report covers the whole test split."""
    # batch 7: each rank's ceil(27 / 2) = 14 images fill two whole batches (a partial one would be dropped)
    log, run_dir = _torchrun_two_epochs(tmp_path, _saved_dataset(tmp_path / "hfds"), "batch_size = 7")
    summary = json.loads((run_dir / "summary.json").read_text())
    n_train, n_test = summary["split_sizes"]["train"], summary["split_sizes"]["test"]
    assert n_train == 27 and summary["world_size"] == 2  # odd: one rank's stretch is one short and padded
    orders = []
    for epoch in (1, 2):
        ranks = [[int(i) for i in (log / f"train-epoch{epoch}-rank{r}.txt").read_text().split()] for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 14  # ceil(27 / 2): the same steps on both ranks
        assert not set(ranks[0]) & set(ranks[1])  # disjoint
        assert set(ranks[0]) | set(ranks[1]) == set(range(n_train))  # the whole split, every epoch
        orders.append(ranks[0])
    assert orders[0] != orders[1]  # a new order every epoch
    report = json.loads((run_dir / "report_test.json").read_text())
    assert report["count"] == n_test == 9 and sum(sum(row) for row in report["confusion"]) == n_test


def _parquet_dataset(tmp_path: Path) -> Path:
    """The saved dataset's splits as Parquet files in one folder (what a Hub dataset streams from)."""
    import datasets

    loaded = datasets.load_from_disk(str(_saved_dataset(tmp_path / "hfds")))
    (tmp_path / "pq").mkdir()
    for split in ("train", "test"):
        loaded[split].to_parquet(str(tmp_path / "pq" / f"{split}.parquet"))
    return tmp_path / "pq"


@pytest.mark.parametrize("source", ["save_to_disk", "parquet"])
def test_i26_3_streamed_splits_hold_the_rows_and_pixels_of_the_loaded_ones(tmp_path, source):
    """``data.streaming = true`` reads the same rows into each split (carving included) as loading the dataset,
    and decodes each to the same base image."""
    from vitkit.data.hf import HuggingFace

    root = _saved_dataset(tmp_path / "hfds") if source == "save_to_disk" else _parquet_dataset(tmp_path)
    kwargs = {"img_size": 16, "root": str(root), "image_key": "picture", "label_key": "shape", "num_workers": 0}
    loaded, streamed = (HuggingFace(**kwargs, streaming=on).load() for on in (False, True))
    assert streamed.classes == loaded.classes == SHAPES
    for name in ("train", "val", "test"):
        rows = {
            (split, row): (i, target) for i, ((split, row), target) in enumerate(getattr(loaded, name).files.samples)
        }
        stream = getattr(streamed, name).files  # in shard order: rows sorted, one shard per split here
        streamed_rows = {(split, row): target for (split, _, row), target in stream.samples}
        assert streamed_rows == {place: target for place, (_, target) in rows.items()}
        assert len(stream) == len(rows) and stream.shards.lengths == [len(rows)]
        for i in (0, len(rows) - 1):
            (split, _, row), _ = stream.samples[i]
            assert torch.equal(stream[i][0], getattr(loaded, name).files[rows[split, row][0]][0])


@pytest.mark.slow
def test_i26_3_torchrun_on_a_streamed_hf_dataset_gives_each_rank_and_worker_its_own_rows(tmp_path):
    """Two processes with 2 workers each stream Parquet files: per epoch each rank's training rows are disjoint,
    the same count on both, together the whole split; the test report covers the whole test split."""
    # batch 7: ceil(27 / 2) = 14 fills two whole batches (one per worker), so no row is dropped
    log, run_dir = _torchrun_two_epochs(tmp_path, _parquet_dataset(tmp_path), "batch_size = 7\nstreaming = true")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["split_sizes"] == {"train": 27, "val": 3, "test": 9} and summary["world_size"] == 2

    def logged(pattern: str) -> list[int]:
        return [int(line) for path in sorted(log.glob(pattern)) for line in path.read_text().split()]

    for epoch in (1, 2):
        ranks = [logged(f"train-epoch{epoch}-rank{r}-worker*.txt") for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 14  # ceil(27 / 2): the same steps on both ranks
        assert not set(ranks[0]) & set(ranks[1])
        assert set(ranks[0]) | set(ranks[1]) == set(range(27))
    tested = [logged(f"test-epoch0-rank{r}-worker*.txt") for r in (0, 1)]
    assert sorted(tested[0] + tested[1]) == list(range(9))  # every test image exactly once
    report = json.loads((run_dir / "report_test.json").read_text())
    assert report["count"] == 9 and sum(sum(row) for row in report["confusion"]) == 9
