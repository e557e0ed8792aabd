"""Issue 33, items 1 and 13: a torchrun run on one shard never hangs, a stuck rank or loader fails within
``train.wait_timeout`` with one line, and the last partial training batch follows one rule for every loader
(folder, in-memory, shards), so the same images give the same steps per epoch and LR schedule through any.
Ranks and workers are stalled through the ``VITKIT_TEST_STALL_AT`` hook (``vitkit.testing``), never by timing."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import ROOT, torchrun_vitkit
from .photos import draw_photo

SHAPES = ("disc", "square", "triangle")
COUNTS = {"train": (28, 28, 27), "val": (1, 1, 1), "test": (1, 1, 1)}  # 83 training images
RECIPE = """
name = "i33"
seed = 3
plugins = ["STEPS"]
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
DATA
batch_size = BATCH
[train]
epochs = 2
[output]
dir = "OUT"
"""
# a plugin that records every optimizer update of rank 0: (epoch, step, lr) per line
STEPS = """
import os
from pathlib import Path

import vitkit


@vitkit.hookimpl
def vitkit_on_train_step(run, epoch, step, lr):
    with open(Path(os.environ["I33_STEPS"]), "a") as f:
        f.write(f"{epoch} {step} {lr!r}\\n")
"""


def _vitkit(*args: str, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **env}
    command = [sys.executable, "-m", "vitkit", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, Path]:
    """A ``train/ val/ test/`` folder of small JPEGs (83 training images) and its shards (one per split)."""
    root = tmp_path_factory.mktemp("i33") / "photos"
    rng = random.Random(0)
    for split, counts in COUNTS.items():
        for shape, count in zip(SHAPES, counts, strict=True):
            (root / split / shape).mkdir(parents=True)
            for i in range(count):
                draw_photo(shape, rng.randint(20, 40), rng.randint(20, 40), rng).save(root / split / shape / f"{i}.jpg")
    shards = root.parent / "shards"
    done = _vitkit("shards", root, "--out", shards)
    assert done.returncode == 0, done.stderr
    info = json.loads((shards / "_info.json").read_text())
    assert [len(info["splits"][s]["filenames"]) for s in COUNTS] == [1, 1, 1]  # one train-000000.tar
    return root, shards


def _data(kind: str, photos: tuple[Path, Path]) -> str:
    root, shards = photos
    if kind == "shards":
        splits = "\n".join(f'{s} = ["{s}-000000.tar"]' for s in COUNTS)
        return f'dataset = "webdataset"\nroot = "{shards.as_posix()}"\n{splits}'
    cache = "memory" if kind == "in-memory" else "off"  # a decoded cache is an in-memory split; off: files
    return f'dataset = "imagefolder"\nroot = "{root.as_posix()}"\ncache = "{cache}"\ncache_dir = "{root.parent}/c"'


def _recipe(
    tmp_path: Path, kind: str, photos: tuple[Path, Path], batch: int = 8, extra: str = "", epochs: int = 2
) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "steps.py").write_text(STEPS)
    text = (
        RECIPE.replace("STEPS", (tmp_path / "steps.py").as_posix())
        .replace("DATA", _data(kind, photos))
        .replace("BATCH", str(batch))
        .replace("OUT", (tmp_path / "runs").as_posix())
        .replace("epochs = 2", f"epochs = {epochs}")
    )
    path = tmp_path / "r.toml"
    path.write_text(text.replace("[train]\n", f"[train]\n{extra}"))
    return path


def _steps(path: Path) -> dict[int, list[tuple[int, float]]]:
    """``epoch -> [(update step, lr), ...]`` as rank 0's hook saw them."""
    out: dict[int, list[tuple[int, float]]] = {}
    for line in path.read_text().split("\n"):
        if line:
            epoch, step, lr = line.split()
            out.setdefault(int(epoch), []).append((int(step), float(lr)))
    return out


def _run(tmp_path: Path, kind: str, photos: tuple[Path, Path], ranks: int, cli, monkeypatch) -> dict:
    recipe = _recipe(tmp_path / kind, kind, photos, epochs=1)
    steps = tmp_path / kind / "steps.txt"
    if ranks == 1:  # in this process (vitkit run as the CLI runs it)
        monkeypatch.setenv("I33_STEPS", str(steps))
        code, _, err = cli("run", recipe)
        assert code == 0, err
    else:
        done = torchrun_vitkit(["run", recipe], I33_STEPS=str(steps))
        assert done.returncode == 0, done.stderr[-3000:]
    return _steps(steps)


@pytest.mark.parametrize("ranks", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_i33_13_the_same_images_give_the_same_steps_through_every_loader(tmp_path, photos, ranks, cli, monkeypatch):
    """83 training images at batch 8 as a folder (file DataLoader), decoded in memory, and as shards: every
    loader drops the last partial batch (timm's rule): 10 steps per epoch, 5 per rank under 2 processes,
    and the same LR at every step (the schedule has the same length)."""
    runs = {kind: _run(tmp_path, kind, photos, ranks, cli, monkeypatch) for kind in ("folder", "in-memory", "shards")}
    expected = math.ceil(83 / ranks) // 8  # 10 in one process, 5 per rank in two
    assert {kind: len(steps[1]) for kind, steps in runs.items()} == dict.fromkeys(runs, expected)
    assert runs["folder"] == runs["in-memory"] == runs["shards"]  # the same update steps and LRs


def _logged(folder: Path, pattern: str) -> list[int]:
    return [int(line) for path in sorted(folder.glob(pattern)) for line in path.read_text().split()]


def _one_image_shard(shards: Path, split: str) -> str:
    """A shard holding the first sample of ``split``'s shard, listed in ``_info.json`` as split ``one``."""
    with tarfile.open(shards / f"{split}-000000.tar") as source, tarfile.open(shards / "one.tar", "w") as out:
        for member in source.getmembers()[:3]:  # .jpg, .cls, .json of one key
            out.addfile(member, source.extractfile(member))
    info = json.loads((shards / "_info.json").read_text())
    info["splits"]["one"] = {"name": "one", "num_samples": 1, "filenames": ["one.tar"], "shard_lengths": [1]}
    (shards / "_info.json").write_text(json.dumps(info))
    return "one.tar"


@pytest.mark.slow
def test_i33_1_one_shard_two_ranks_with_workers_run_the_same_steps_and_finish(tmp_path, photos):
    """The setup that hung: one train shard, two ranks, the default DataLoader workers, batch 32, 2 epochs,
    here with a one-image val shard (rank 1's val share is empty). Each rank trains the same whole batches of
    disjoint samples every epoch, both evaluate, and the run finishes."""
    root, shards = photos
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    one = _one_image_shard(copy, "val")
    recipe = _recipe(tmp_path, "shards", (root, copy), batch=32)
    recipe.write_text(recipe.read_text().replace('val = ["val-000000.tar"]', f'val = ["{one}"]'))
    log = tmp_path / "log"
    log.mkdir()
    done = torchrun_vitkit(["run", recipe], VITKIT_TEST_SAMPLE_LOG=str(log), I33_STEPS=str(tmp_path / "steps"))
    assert done.returncode == 0, done.stderr[-3000:]
    for epoch in (1, 2):
        ranks = [_logged(log, f"train-epoch{epoch}-rank{r}-worker*.txt") for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 32  # ceil(83 / 2) = 42: one whole batch of 32 on each rank
        assert not set(ranks[0]) & set(ranks[1]) and all(len(set(r)) == len(r) for r in ranks)
    assert [len(s) for s in _steps(tmp_path / "steps").values()] == [1, 1]
    (run_dir,) = (tmp_path / "runs" / "i33").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert summary["split_sizes"] == {"train": 83, "val": 1, "test": 3}


def _vitkit_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vitkit:")]


@pytest.mark.slow
def test_i33_1_a_rank_stuck_before_a_collective_makes_the_other_fail_in_one_line(tmp_path):
    """Rank 1 stops for good before step 2 of epoch 1 (a stuck loader, say); rank 0 waits in that step's
    gradient all-reduce for train.wait_timeout (10 s here, not gloo's 30 min), then prints one line naming
    its rank and what it waited for; torchrun ends rank 1 and the launch fails."""
    recipe = tmp_path / "digits.toml"
    recipe.write_text(
        'name = "stuck"\n[model]\nname = "vit_nano_patch4_16"\ndepth = 1\nimg_size = 16\n'
        f'[data]\nbatch_size = 64\n[train]\nepochs = 1\nwait_timeout = 10\n[output]\ndir = "{tmp_path / "runs"}"\n'
    )
    done = torchrun_vitkit(["run", recipe], VITKIT_TEST_STALL_AT="step:1:2:1")
    assert done.returncode != 0
    lines = _vitkit_lines(done.stderr)
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("vitkit: rank 0: waited 10 s for the gradients of epoch 1, step 2 of "), lines
    assert "(train.wait_timeout): another process of this run is stuck" in lines[0]
    assert "checkpoints/last.pt keeps epoch 0" in lines[0]
    assert "vitkit/engine" not in done.stderr  # no traceback of vitkit's


def test_i33_1_a_stuck_loader_worker_fails_in_one_line(tmp_path, photos):
    """A DataLoader worker that never delivers a batch (stalled as it starts) ends the run after
    train.wait_timeout with one line saying what it waited for, exit 1, instead of waiting for ever."""
    recipe = _recipe(tmp_path, "shards", photos, extra="wait_timeout = 2\n")
    done = _vitkit("run", recipe, VITKIT_TEST_STALL_AT="worker:0", I33_STEPS=str(tmp_path / "steps"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "vitkit: waited 2 s for a training batch from its 2 DataLoader workers (train.wait_timeout): a worker is "
        "stuck or reads that slowly; set data.num_workers = 0 to see where it stops, or raise train.wait_timeout"
    ]


def test_i33_1_a_collective_timeout_is_told_from_a_lost_peer_and_from_a_bug():
    from vitkit.engine import distributed

    gloo = "[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv operation to complete"
    assert distributed.timed_out(RuntimeError(gloo))
    assert not distributed.timed_out(RuntimeError("[../gloo/transport/tcp/pair.cc:598] Connection closed by peer"))
    assert not distributed.timed_out(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x10)"))
