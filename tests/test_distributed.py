"""Runs under ``torchrun`` on CPU (gloo), with the defaults a user has (plots and report on):
the report of 2 processes equals one process evaluating the same checkpoint, FSDP resumes, a lost
worker restarted by ``--max-restarts`` continues its run, two launchers (``--nnodes=2``) write one run.
Kills happen at a chosen epoch and step (``VITKIT_TEST_SIGNAL_AT``), never by timing."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from vitkit.engine import distributed as dist
from vitkit.runs.checkpoint import load_checkpoint

from .conftest import ROOT

RECIPE = """
name = "dist"
seed = 1
[model]
name = "MODEL"
depth = 1
img_size = 16
[data]
dataset = "digits"
batch_size = 64
[augment]
train = [{ name = "translate", pixels = 2 }]
[optimizer]
name = "adamw"
lr = 3e-3
[train]
epochs = 2
strategy = "STRATEGY"
[output]
dir = "OUT"
"""

# a vit_nano that writes, per rank, a hash of its initial weights and a draw from the RNG stream at
# the first training step (the draw leaves the stream as it was, so the run's numbers do not change)
PROBE = '''
import hashlib
import json
import os
from pathlib import Path

import torch

import vitkit


@vitkit.register_model("dist_probe_vit")
def dist_probe_vit(img_size: int = 16, **kwargs):
    """vit_nano_patch4_16 reporting its initial weights and first training draw per rank."""
    model = vitkit.create_model("vit_nano_patch4_16", img_size=img_size, **kwargs)
    out = os.environ.get("VITKIT_PROBE_DIR")
    if not out:
        return model
    rank = os.environ.get("RANK", "0")
    weights = b"".join(t.detach().numpy().tobytes() for t in model.state_dict().values())
    Path(out, f"weights{rank}.txt").write_text(hashlib.sha256(weights).hexdigest())
    draw = Path(out, f"draw{rank}.json")

    def first_draw(module, args):
        if module.training and not draw.exists():
            state = torch.get_rng_state()
            draw.write_text(json.dumps(torch.rand(8).tolist()))
            torch.set_rng_state(state)

    model.register_forward_pre_hook(first_draw)
    return model
'''
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # not time, img_per_s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(launcher: list[str], vitkit_args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    """``torchrun LAUNCHER -m vitkit VITKIT_ARGS`` in a session of its own (a hang is ended with every worker)."""
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "vitkit", *vitkit_args]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
        "PYTHONFAULTHANDLER": "1",
        **env,
    }
    return subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:  # a guard against a hang only; nothing is timed
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"torchrun hung: {err[-3000:]}") from None
    return proc.returncode, out, err


def _failure(err: str, out: str = "") -> str:
    """What a failed launch printed: rank 0's last output lines (how far the run got), the workers' own
    error lines (Python tracebacks, faulthandler's dump of a C++ abort), then torchrun's."""
    lines = [line for line in err.splitlines() if "torch/distributed/elastic" not in line]
    return "stdout: " + out[-1500:] + "\nstderr: " + "\n".join(lines)[-6000:]


def _torchrun(vitkit_args: list[str], cwd: Path, launcher: tuple[str, ...] = (), **env: str) -> tuple[int, str, str]:
    return _wait(_start(["--standalone", "--nproc_per_node=2", *launcher], vitkit_args, cwd, **env))


def _recipe(folder: Path, model: str = "dist_probe_vit", strategy: str = "ddp") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = RECIPE.replace("MODEL", model).replace("STRATEGY", strategy).replace("OUT", str(folder / "runs"))
    path = folder / "dist.toml"
    path.write_text(text)
    return path


def _run_dir(folder: Path) -> Path:
    (run_dir,) = (folder / "runs" / "dist").iterdir()  # one run directory, not one per rank or restart
    return run_dir


def _rows(run_dir: Path) -> list[tuple[str, ...]]:
    rows = csv.DictReader((run_dir / "metrics.csv").read_text().splitlines())
    return [tuple(row[k] for k in COMPARED) for row in rows]


def _files(run_dir: Path) -> set[str]:
    """What the run directory holds: its entries and its checkpoints (not inside folders that plugins
    write, e.g. TensorBoard's ``tb/``, whose file names carry a time and a process id)."""
    return {p.name for p in run_dir.iterdir()} | {f"checkpoints/{p.name}" for p in (run_dir / "checkpoints").iterdir()}


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "dist_probe.py"
    path.write_text(PROBE)
    return path


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, probe):
    """An uninterrupted 2-process DDP run with the probe model: (folder, recipe, run dir, stdout, its files)."""
    folder = tmp_path_factory.mktemp("ddp")
    recipe = _recipe(folder)
    (folder / "probe").mkdir()
    code, out, err = _torchrun(
        ["run", str(recipe), "--plugin", str(probe)], folder, VITKIT_PROBE_DIR=str(folder / "probe")
    )
    assert code == 0, _failure(err, out)
    return folder, recipe, _run_dir(folder), out, _files(_run_dir(folder))  # files before vitkit eval adds one


# ------------------------------------------------------------------------------------------ fast


def test_eval_shards_cover_each_image_once_and_merge_back_in_order():
    from vitkit.data.loaders import eval_shard

    for n in (0, 1, 7, 359):
        for world in (1, 2, 3, 8):
            shards = [list(eval_shard(n, rank, world)) for rank in range(world)]
            assert sorted(i for shard in shards for i in shard) == list(range(n))  # no padding, no repeats
            longest = max((len(s) for s in shards), default=0)
            parts = [torch.tensor(s + [-1] * (longest - len(s))) for s in shards]
            if longest:
                assert dist.merge_shards(parts, n).tolist() == list(range(n))


def test_file_backed_eval_shards_are_not_padded(tmp_path):
    """``DistributedSampler`` would give each of 2 ranks 3 of 5 images (one twice); evaluation takes 3 + 2."""
    from PIL import Image

    from vitkit.data import BatchTransform, build_loader
    from vitkit.data.datasets import ImageFiles, ImageSet

    paths = []
    for i in range(5):
        paths.append((tmp_path / f"{i}.png", i))
        Image.fromarray(torch.full((8, 8), 40 * i, dtype=torch.uint8).numpy()).save(paths[-1][0])
    labels = []
    for rank in range(2):
        data = ImageSet(files=ImageFiles(paths, 8, 1))
        loader = build_loader(data, 2, BatchTransform(8, (0.0,), (1.0,)), torch.device("cpu"), False, 0, 0, rank, 2)
        labels.append(torch.cat([targets for _, targets in loader]).tolist())
    assert labels == [[0, 2, 4], [1, 3]]
    assert dist.merge_shards([torch.tensor(labels[0]), torch.tensor([*labels[1], -1])], 5).tolist() == [0, 1, 2, 3, 4]


def test_optimizer_state_by_name_loads_into_a_single_process(tmp_path):
    """A checkpoint's optimizer state keyed by parameter name (FSDP's) or by position loads alike."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # as when a run resumes
    by_position = optimizer.state_dict()
    by_name = dist.optimizer_state_by_name(model, optimizer, by_position)
    assert set(by_name["state"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    for state in (by_position, by_name):
        fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
        dist.load_full_optimizer_state_dict(model, fresh, state, "single")
        loaded = fresh.state_dict()["state"]
        for i, expected in by_position["state"].items():
            assert torch.equal(loaded[i]["exp_avg"], expected["exp_avg"])


def test_restarted_workers_find_their_run_and_nothing_else(tmp_path, monkeypatch):
    from vitkit.engine import elastic
    from vitkit.recipe import load_recipe

    recipe = load_recipe(_recipe(tmp_path, "vit_nano_patch4_16"))
    other = load_recipe(_recipe(tmp_path, "vit_nano_patch4_16"), ["seed=2"])
    mine = tmp_path / "runs" / "dist" / "20260101-000000"
    (mine / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    elastic.mark(mine, recipe)
    assert elastic.restarted_run(recipe) is None  # the first attempt starts a new run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic.restarted_run(recipe) == mine
    assert elastic.restarted_run(other) is None  # another recipe (here: --set seed=2)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    assert elastic.restarted_run(recipe) is None  # another torchrun job
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-a")
    elastic.unmark(mine)
    assert elastic.restarted_run(recipe) is None  # finished


def test_signal_point_fires_at_its_epoch_step_and_rank_on_the_first_attempt_only(monkeypatch):
    from vitkit.engine import faults

    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    monkeypatch.setenv("VITKIT_TEST_SIGNAL_AT", "2:3")
    for epoch, step, rank in ((2, 2, 0), (1, 3, 0), (2, 3, 1), (2, 3, 0)):
        faults.signal_at_test_point(epoch, step, rank)
    assert sent == [signal.SIGKILL]
    monkeypatch.setenv("VITKIT_TEST_SIGNAL_AT", "4:1:INT:1")
    faults.signal_at_test_point(4, 1, 0)
    faults.signal_at_test_point(4, 1, 1)
    assert sent == [signal.SIGKILL, signal.SIGINT]
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # torchrun's restart: the point has passed
    faults.signal_at_test_point(4, 1, 1)
    assert len(sent) == 2


GLOO_PEER_GONE = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:36052: Connection reset "
    "by peer. This is typically caused by a remote worker hanging or bugs in the app"
)


def test_peer_lost_tells_a_gone_process_from_a_bug():
    assert dist.peer_lost(RuntimeError(GLOO_PEER_GONE))
    assert dist.peer_lost(RuntimeError("[../gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.0.0.2]:4123"))
    assert not dist.peer_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x10)"))


def _surviving_rank_run(monkeypatch, tmp_path, cli, message: str):
    """``vitkit run`` on rank 1 of 2 whose Trainer's next collective fails with ``message``."""
    from types import SimpleNamespace

    from vitkit.engine import fit

    class SurvivingRank:
        def __init__(self, recipe, plugins=None, data=None):
            self.dist = dist.Dist(rank=1, world_size=2)
            self.run, self.saved_epoch = SimpleNamespace(run_dir=tmp_path / "run"), 3

        def fit(self, run_dir=None, resume=None):
            raise RuntimeError(message)

    monkeypatch.setattr(fit, "Trainer", SurvivingRank)
    return cli("run", _recipe(tmp_path, "vit_nano_patch4_16"))


def test_a_surviving_rank_says_its_peer_is_gone_in_one_line(monkeypatch, tmp_path, cli):
    """Under torchrun, a rank whose collective fails because another rank died prints one line and exits 1
    (torchrun --max-restarts then restarts the group)."""
    code, _, err = _surviving_rank_run(monkeypatch, tmp_path, cli, GLOO_PEER_GONE)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("vitkit: rank 1: another process of this run is gone (Read error [127.0.0.1]:36052: ")
    assert "checkpoints/last.pt keeps epoch 3" in err and f"vitkit run --resume {tmp_path / 'run'}" in err


def test_a_runtime_error_that_is_not_a_lost_peer_still_raises(monkeypatch, tmp_path, cli):
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        _surviving_rank_run(monkeypatch, tmp_path, cli, "mat1 and mat2 shapes cannot be multiplied")


# ------------------------------------------------------------------------------------ torchrun


@pytest.mark.slow
def test_two_processes_report_equals_one_process_evaluating_the_checkpoint(ddp_run, probe, tmp_path, cli):
    folder, recipe, run_dir, out, files = ddp_run
    assert out.count("epoch 2/2") == 1  # rank 0 alone prints
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == "ddp" and summary["epochs_run"] == 2
    report = json.loads((run_dir / "report_test.json").read_text())
    assert report["count"] == 359 == sum(row["support"] for row in report["per_class"])  # every test image once
    assert sum(map(sum, report["confusion"])) == 359

    # the same files as a one-process run of the recipe (the elastic marker is gone once it finished)
    code, _, err = cli("run", recipe, "--plugin", probe, "--set", f'output.dir="{tmp_path}"')
    assert code == 0, err
    (single,) = (tmp_path / "dist").iterdir()
    assert files == _files(single)

    # one process evaluating the 2-process run's checkpoint: the same numbers
    code, _, err = cli("eval", run_dir, "--plugin", probe)
    assert code == 0, err
    again = json.loads((run_dir / "report_test.json").read_text())
    assert again["acc"] == report["acc"] == summary["test_acc"]
    assert again["per_class"] == report["per_class"] and again["confusion"] == report["confusion"]
    assert again["top5"] == report["top5"] and again["loss"] == pytest.approx(report["loss"], rel=1e-5)

    # issue 17.9: identical initial weights on both ranks, then each rank draws its own numbers
    probes = folder / "probe"
    assert (probes / "weights0.txt").read_text() == (probes / "weights1.txt").read_text()
    assert (probes / "draw0.json").read_text() != (probes / "draw1.json").read_text()


@pytest.mark.slow
def test_lost_worker_is_restarted_and_the_run_continues_in_its_directory(ddp_run, probe, tmp_path):
    """Rank 1 is SIGKILLed at step 3 of epoch 2; torchrun restarts both workers, which continue the same
    run directory from last.pt (epoch 1) and end with the uninterrupted run's metrics."""
    _, _, reference, _, files = ddp_run
    recipe = _recipe(tmp_path)
    code, out, err = _torchrun(
        ["run", str(recipe), "--plugin", str(probe)],
        tmp_path,
        ("--max-restarts=1",),
        VITKIT_TEST_SIGNAL_AT="2:3:KILL:1",
    )
    assert code == 0, _failure(err, out)
    assert "resuming after epoch 1" in out
    assert "Traceback" not in err  # rank 0, left alone in its collective, says so in one line (if not stopped first)
    run_dir = _run_dir(tmp_path)
    assert _rows(run_dir) == _rows(reference)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert summary["test_acc"] == expected["test_acc"] and summary["best_epoch"] == expected["best_epoch"]
    assert _files(run_dir) == files


@pytest.mark.slow
def test_two_launchers_one_process_each_write_one_run(ddp_run, probe, tmp_path):
    """``--nnodes=2`` with a c10d rendezvous on 127.0.0.1: the same run as one launcher with 2 processes."""
    _, _, reference, _, files = ddp_run
    recipe = _recipe(tmp_path)
    launcher = [
        "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{_free_port()}", f"--rdzv_id=vitkit-test-{uuid.uuid4().hex[:8]}",
    ]  # fmt: skip
    procs = [_start(launcher, ["run", str(recipe), "--plugin", str(probe)], tmp_path) for _ in range(2)]
    results = [_wait(proc) for proc in procs]
    for code, out, err in results:
        assert code == 0, _failure(err, out)
    assert sum(out.count("epoch 2/2") for _, out, _ in results) == 1  # global rank 0 alone prints
    run_dir = _run_dir(tmp_path)
    assert _rows(run_dir) == _rows(reference)
    assert json.loads((run_dir / "summary.json").read_text())["world_size"] == 2
    assert _files(run_dir) == files


@pytest.mark.slow
def test_fsdp_killed_and_resumed_matches_uninterrupted(tmp_path):
    """Issue 17.1: FSDP's last.pt (whole weights, optimizer state by parameter name) resumes under FSDP."""
    args = lambda recipe: ["run", str(recipe)]  # noqa: E731
    reference = _recipe(tmp_path / "reference", "vit_nano_patch4_16", "fsdp")
    code, out, err = _torchrun(args(reference), tmp_path)
    assert code == 0, _failure(err, out)

    killed = _recipe(tmp_path / "killed", "vit_nano_patch4_16", "fsdp")
    code, _, _ = _torchrun(args(killed), tmp_path, VITKIT_TEST_SIGNAL_AT="2:2:KILL:1")
    assert code != 0
    run_dir = _run_dir(tmp_path / "killed")
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and not (run_dir / "summary.json").exists()
    assert all(isinstance(name, str) for name in state["optimizer"]["state"])  # whole state, by name
    assert len(state["rng_ranks"]) == 2

    code, out, err = _torchrun(["run", "--resume", str(run_dir)], tmp_path)
    assert code == 0, _failure(err, out)
    expected_dir = _run_dir(tmp_path / "reference")
    assert _rows(run_dir) == _rows(expected_dir)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, expected_dir))
    assert summary["test_acc"] == expected["test_acc"] and summary["strategy"] == "fsdp"
