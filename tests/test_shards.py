"""Issue 26: ``vitkit shards`` writes WebDataset tars that round-trip and that timm reads;
``data.dataset = "webdataset"`` streams them with exact epochs under torchrun and resumes exactly.
Folders and shards are generated in tmp_path; nothing is downloaded."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vitkit.data.folder import scan

from .conftest import ROOT, torchrun_vitkit
from .photos import tiny_folder

RECIPE = """
name = "wds"
seed = 2
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "webdataset"
root = "SHARDS"
train = "train-{000000..LAST}.tar"
val = VAL
test = TEST
batch_size = 4
[train]
epochs = EPOCHS
[output]
dir = "OUT"
"""
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def _vitkit(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


def _members(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """``key -> {extension: bytes}`` of a shard, in order."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory):
    """A generated folder (3 classes x 11 JPEGs) and its shards, several per split, of uneven lengths."""
    base = tmp_path_factory.mktemp("shards")
    photos = tiny_folder(base / "photos", per_class=11)
    done = _vitkit("shards", photos, "--out", base / "shards", "--shard-size", "6KB")
    assert done.returncode == 0, done.stderr
    return photos, base / "shards", done.stdout


def _recipe(tmp_path: Path, shards: Path, epochs: int = 2, extra: str = "") -> Path:
    info = json.loads((shards / "_info.json").read_text())
    last = len(info["splits"]["train"]["filenames"]) - 1
    text = (
        RECIPE.replace("SHARDS", shards.as_posix())
        .replace("LAST", f"{last:06d}")
        .replace("VAL", json.dumps(info["splits"]["val"]["filenames"]))
        .replace("TEST", json.dumps(info["splits"]["test"]["filenames"]))
        .replace("EPOCHS", str(epochs))
        .replace("OUT", (tmp_path / "runs").as_posix())
    )
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "wds.toml"
    path.write_text(text + extra)
    return path


def test_i26_1_shards_round_trip_every_image_and_label(shard_set):
    photos, shards, out = shard_set
    classes, found, _ = scan(photos)
    info = json.loads((shards / "_info.json").read_text())
    assert json.loads((shards / "classes.json").read_text()) == classes == info["classes"]
    seen: dict[str, int] = {}
    for name, split in info["splits"].items():
        assert split["name"] == name and len(split["filenames"]) >= 2  # several shards per split
        keys = []
        for filename, length in zip(split["filenames"], split["shard_lengths"], strict=True):
            assert filename.startswith(f"{name}-") and filename.endswith(".tar")
            samples = _members(shards / filename)
            assert len(samples) == length  # the counts timm's reader and the epoch length rely on
            for key, sample in samples.items():
                meta = json.loads(sample["json"])
                original = photos / meta["path"]
                assert sample["jpg"] == original.read_bytes()  # the original encoded bytes
                assert classes[int(sample["cls"])] == meta["class"] == original.parent.name
                seen[meta["path"]] = seen.get(meta["path"], 0) + 1
                keys.append(key)
        assert keys == [f"{name}-{i:08d}" for i in range(split["num_samples"])]
        assert f"{name}: {split['num_samples']} images in {len(split['filenames'])} shards" in out
    every = {str(path.relative_to(photos)) for path, _ in found["train"]}
    assert set(seen) == every and set(seen.values()) == {1}  # each image once, in one split


def test_i26_1_shards_hold_the_splits_a_run_uses(tmp_path, shard_set):
    """The folder's shards hold the splits the data path carves (the same as a run's split.json)."""
    from vitkit.engine.build import load_dataset
    from vitkit.recipe import recipe_from_dict

    photos, shards, _ = shard_set
    recipe = recipe_from_dict({"data": {"dataset": "imagefolder", "root": str(photos), "cache": "off"}})
    data = load_dataset(recipe, 16)
    info = json.loads((shards / "_info.json").read_text())
    for name in ("train", "val", "test"):
        expected = [str(Path(p).relative_to(photos)) for p, _ in getattr(data, name).files.samples]
        paths = [
            json.loads(sample["json"])["path"]
            for filename in info["splits"][name]["filenames"]
            for sample in _members(shards / filename).values()
        ]
        assert paths == expected


def test_i26_1_max_size_reencodes_large_images(tmp_path):
    from PIL import Image

    photos = tiny_folder(tmp_path / "photos", per_class=4)
    done = _vitkit("shards", photos, "--out", tmp_path / "small", "--max-size", "24")
    assert done.returncode == 0, done.stderr
    sizes = []
    for tar_path in (tmp_path / "small").glob("*.tar"):
        for sample in _members(tar_path).values():
            image_ext = next(ext for ext in sample if ext in ("jpg", "png"))
            import io

            with Image.open(io.BytesIO(sample[image_ext])) as img:
                sizes.append(max(img.size))
    assert len(sizes) == 12 and max(sizes) == 24  # the generated photos are 20-48 px: large ones shrank


def test_i26_1_shards_of_a_bad_source_is_one_line(tmp_path):
    done = _vitkit("shards", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nowhere" in done.stderr


def test_i26_1_timm_reads_vitkit_shards(shard_set):
    import timm.data

    photos, shards, _ = shard_set
    info = json.loads((shards / "_info.json").read_text())
    for split in ("train", "test"):
        dataset = timm.data.create_dataset("wds/generated", root=str(shards), split=split)
        labels = [int(target) for _, target in dataset]
        expected = []
        for filename in info["splits"][split]["filenames"]:
            expected += [int(s["cls"]) for s in _members(shards / filename).values()]
        assert len(labels) == info["splits"][split]["num_samples"] == len(expected)
        assert sorted(labels) == sorted(expected)


@pytest.mark.parametrize("n,world,workers,batch", [(33, 2, 2, 4), (7, 3, 2, 2), (10, 2, 3, 3), (5, 1, 2, 8)])
def test_i26_2_plan_gives_every_rank_the_same_steps_and_covers_the_split_once(n, world, workers, batch):
    from vitkit.data.shards import Shards
    from vitkit.data.shares import train_used
    from vitkit.data.stream import ShardStream

    lengths = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5][: max(1, n // 3)]
    lengths[-1] += n - sum(lengths)
    shards = Shards([f"s{i}.tar" for i in range(len(lengths))], lengths)
    for train in (True, False):
        per_rank, batches = [], set()
        for rank in range(world):
            stream = ShardStream(shards, 8, 3)
            stream.train, stream.batch_size, stream.rank, stream.world_size, stream.epoch = train, batch, rank, world, 3
            positions = _round_robin([stream.worker_positions(w, workers) for w in range(workers)], batch)
            assert len(positions) == stream.rank_count()
            per_rank.append(positions)
            batches.add(stream.num_batches())
        if train:  # the same whole batches on every rank (a share under one batch: one short step)
            used = train_used(n, world, batch)
            assert len(batches) == 1 and {len(p) for p in per_rank} == {used}
            assert used == (math.ceil(n / world) // batch * batch or math.ceil(n / world))
            for a in range(world):  # disjoint across ranks; a rank repeats at most one of its own
                assert len(per_rank[a]) - len(set(per_rank[a])) <= 1
                for b in range(a + 1, world):
                    assert not set(per_rank[a]) & set(per_rank[b])
            assert set().union(*map(set, per_rank)) <= set(range(n))
        else:  # evaluation: each position once, rank r holding r, r + W, ... in order
            assert per_rank == [list(range(r, n, world)) for r in range(world)]
            assert set().union(*map(set, per_rank)) == set(range(n))


def _round_robin(per_worker: list[list[int]], batch: int) -> list[int]:
    """The order a DataLoader returns workers' batches in: one batch of each worker in turn."""
    chunks = [[p[i : i + batch] for i in range(0, len(p), batch)] for p in per_worker]
    return [x for j in range(max(map(len, chunks))) for c in chunks if j < len(c) for x in c[j]]


def _rows(run_dir: Path) -> list[tuple[str, ...]]:
    rows = csv.DictReader((run_dir / "metrics.csv").read_text().splitlines())
    return [tuple(row[k] for k in COMPARED) for row in rows]


def _logged(folder: Path, pattern: str) -> list[int]:
    return [int(line) for path in sorted(folder.glob(pattern)) for line in path.read_text().split()]


@pytest.mark.slow
def test_i26_2_torchrun_ranks_read_disjoint_shares_with_the_same_steps(tmp_path, shard_set):
    """Two processes (gloo): per epoch each rank's training samples are disjoint, the same whole batches on
    both (the last partial one dropped, different samples each epoch); the test split is evaluated whole,
    exactly once."""
    _, shards, _ = shard_set
    info = json.loads((shards / "_info.json").read_text())
    n_train, n_test = info["splits"]["train"]["num_samples"], info["splits"]["test"]["num_samples"]
    assert n_train % 2 == 1  # one rank's stretch is one short: the padding is exercised
    recipe = _recipe(tmp_path, shards)
    log = tmp_path / "log"
    log.mkdir()
    done = torchrun_vitkit(["run", recipe], VITKIT_TEST_SAMPLE_LOG=str(log))
    assert done.returncode == 0, done.stderr[-3000:]
    orders = []
    dropped = []
    for epoch in (1, 2):
        ranks = [_logged(log, f"train-epoch{epoch}-rank{r}-worker*.txt") for r in (0, 1)]
        whole = math.ceil(n_train / 2) // 4 * 4  # batch 4: whole batches only
        assert len(ranks[0]) == len(ranks[1]) == whole < math.ceil(n_train / 2)  # the same steps on both ranks
        assert not set(ranks[0]) & set(ranks[1]) and len(set(ranks[0] + ranks[1])) == 2 * whole  # disjoint
        dropped.append(set(range(n_train)) - set(ranks[0]) - set(ranks[1]))
        orders.append(ranks[0])
    assert orders[0] != orders[1] and dropped[0] != dropped[1]  # a new order, other images dropped, each epoch
    tested = [_logged(log, f"test-epoch0-rank{r}-worker*.txt") for r in (0, 1)]
    assert sorted(tested[0] + tested[1]) == list(range(n_test))  # every test image exactly once
    (run_dir,) = (tmp_path / "runs" / "wds").iterdir()
    report = json.loads((run_dir / "report_test.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert report["count"] == n_test == summary["split_sizes"]["test"] and summary["world_size"] == 2
    assert sum(sum(row) for row in report["confusion"]) == n_test


@pytest.mark.slow
def test_i26_2_killed_and_resumed_on_shards_matches_uninterrupted(tmp_path, shard_set, cli):
    """2 epochs, killed at step 2 of epoch 2 (a subprocess: SIGKILL), resumed: the uninterrupted run's
    numbers. The uninterrupted run and the resume run in this process (not what the test is about)."""
    _, shards, _ = shard_set
    reference = _recipe(tmp_path / "reference", shards, epochs=2)
    code, _, err = cli("run", reference)
    assert code == 0, err[-3000:]
    (expected,) = (tmp_path / "reference" / "runs" / "wds").iterdir()

    killed = _recipe(tmp_path / "killed", shards, epochs=2)
    done = _vitkit("run", killed, VITKIT_TEST_SIGNAL_AT="2:2:KILL")
    assert done.returncode == -9, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "killed" / "runs" / "wds").iterdir()
    assert len(_rows(run_dir)) == 1 and not (run_dir / "summary.json").exists()
    code, _, err = cli("run", "--resume", run_dir)
    assert code == 0, err[-3000:]
    assert _rows(run_dir) == _rows(expected) and len(_rows(run_dir)) == 2
    summary, want = (json.loads((d / "summary.json").read_text()) for d in (run_dir, expected))
    assert summary["test_acc"] == want["test_acc"] and summary["test_loss"] == want["test_loss"]


def test_i26_2_webdataset_without_a_split_is_one_line(tmp_path, shard_set, cli):
    _, shards, _ = shard_set
    recipe = _recipe(tmp_path, shards, extra="")
    recipe.write_text(recipe.read_text().replace("test = [", "# test = ["))
    code, _, err = cli("run", recipe)
    assert code == 2 and "data.test" in err and err.count("\n") == 1


@pytest.mark.slow
def test_i26_1_shards_of_a_run_hold_its_split_json(tmp_path, shard_set, cli):
    """A run directory as SOURCE: each split's shards list exactly the files of the run's split.json."""
    from .photos import folder_recipe

    photos, _, _ = shard_set
    recipe = folder_recipe(tmp_path, photos, extra="")
    recipe.write_text(recipe.read_text().replace("batch_size = 8", "batch_size = 8\nsplit_seed = 5"))
    code, _, err = cli("run", recipe)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    done = _vitkit("shards", run_dir, "--out", tmp_path / "run_shards")
    assert done.returncode == 0, done.stderr
    record = json.loads((run_dir / "split.json").read_text())
    info = json.loads((tmp_path / "run_shards" / "_info.json").read_text())
    for name in ("train", "val", "test"):
        paths = [
            json.loads(sample["json"])["path"]
            for filename in info["splits"][name]["filenames"]
            for sample in _members(tmp_path / "run_shards" / filename).values()
        ]
        assert paths == [path for path, _ in record[name]]
