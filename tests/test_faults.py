"""Faults during a run: NaN/inf loss, fp16 skipped steps, out-of-memory, a full disk, a malicious checkpoint."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from vitkit import UserError, register_loss, register_model
from vitkit.engine.faults import NonFiniteWatch, scaler_step
from vitkit.runs.checkpoint import load_checkpoint

TINY = """
name = "faults"
[model]
name = "MODEL"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[loss]
name = "LOSS"
[train]
epochs = 3
[output]
dir = "OUT"
"""  # 1295 training images / 64 = 20 steps per epoch


@register_loss("test_nan_after", override=True)
def nan_after(after: int = 25) -> nn.Module:
    """Cross-entropy that turns NaN after ``after`` calls (a test fault)."""

    class NanAfter(nn.Module):
        calls = 0

        def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            loss = nn.functional.cross_entropy(logits, targets)
            return loss * float("nan") if self.calls > after else loss

    return NanAfter()


@register_model("test_oom", override=True)
def oom_model(num_classes: int = 10, in_chans: int = 1, img_size: int = 16, depth: int = 1) -> nn.Module:
    """A model whose forward raises PyTorch's out-of-memory error, as the CUDA allocator does (a test fault)."""

    class Oom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(in_chans * img_size * img_size, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    return Oom()


def _recipe(tmp_path, model="vit_nano_patch4_16", loss="cross_entropy", extra=""):
    path = tmp_path / "faults.toml"
    path.write_text(TINY.replace("MODEL", model).replace("LOSS", loss).replace("OUT", str(tmp_path / "runs")) + extra)
    return path


def _run_dir(tmp_path):
    (run_dir,) = (tmp_path / "runs" / "faults").iterdir()
    return run_dir


def test_nan_loss_names_epoch_and_step_and_keeps_last_good_checkpoint(cli, tmp_path):
    path = _recipe(tmp_path, loss="test_nan_after")
    path.write_text(path.read_text().replace('"test_nan_after"', '"test_nan_after"\nafter = 25'))
    code, _, err = cli("run", path)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert (
        "training diverged: the loss is NaN or inf at epoch 2, step 6 of 20; checkpoints/last.pt keeps epoch 1; "
        "lower optimizer.lr (now 0.001), or set train.clip_grad = 1.0" in err
    )
    state = load_checkpoint(_run_dir(tmp_path) / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_huge_learning_rate_diverges_with_a_clear_message(cli, tmp_path):
    path = _recipe(tmp_path, extra="[optimizer]\nlr = 1e6\n")
    code, _, err = cli("run", path)
    assert code == 2 and "Traceback" not in err
    assert "training diverged: the loss is NaN or inf at epoch 1, step" in err
    assert "lower optimizer.lr (now 1e+06)" in err
    assert load_checkpoint(_run_dir(tmp_path) / "checkpoints" / "last.pt")["epoch"] == 0


def test_non_finite_watch_records_the_first_bad_step():
    watch = NonFiniteWatch(torch.device("cpu"))
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan"), 3.0]):
        watch.observe(torch.tensor(value), step)
    assert watch.first_bad() == 2 and watch.due(0, 5)


def test_fp16_scaler_skipped_steps_are_counted_not_fatal():
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    before = model.weight.detach().clone()
    scaler.scale(model(torch.full((2, 4), float("inf"))).sum()).backward()  # overflowed gradients
    assert scaler_step(scaler, optimizer) is True
    assert torch.equal(model.weight, before)  # the step was skipped
    optimizer.zero_grad()
    scaler.scale(model(torch.ones(2, 4)).sum()).backward()
    assert scaler_step(scaler, optimizer) is False
    assert not torch.equal(model.weight, before)


def test_out_of_memory_suggests_smaller_batch_and_accumulation(cli, tmp_path):
    """The model raises the exception PyTorch's CUDA allocator raises; a real one is checked on a GPU."""
    code, _, err = cli("run", _recipe(tmp_path, model="test_oom"))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert (
        "out of memory on cpu with data.batch_size = 64; set data.batch_size = 32 and "
        "train.grad_accum_steps = 2 to keep the effective batch of 64" in err
    )


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(cli, tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"last": 0}

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # a last.pt (best.pt holds no optimizer)
            calls["last"] += 1
            if calls["last"] == 3:  # epoch 0, epoch 1, then the disk is full while writing epoch 2
                f.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    code, _, err = cli("run", _recipe(tmp_path))
    run_dir = _run_dir(tmp_path)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"disk full while writing outputs under {run_dir}: No space left on device" in err
    assert f"checkpoints/last.pt (epoch 1) is intact: free space, then vitkit run --resume {run_dir}" in err
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    code, _, err = cli("run", "--resume", run_dir)  # space freed: the run finishes
    assert code == 0, err
    assert (run_dir / "summary.json").is_file()


class Payload:
    """Unpickling this runs code: it writes the file ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.fixture
def malicious_checkpoint(tmp_path):
    """A run directory whose checkpoints carry a pickle payload; returns (run_dir, marker file)."""
    marker = tmp_path / "pwned.txt"
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    state = {"model": {"w": torch.zeros(2)}, "recipe": {"name": "x"}, "epoch": 1, "payload": Payload(str(marker))}
    for name in ("last.pt", "best.pt"):
        torch.save(state, run_dir / "checkpoints" / name)
    # the payload is real: an unsafe load runs it
    unsafe = f"import torch; torch.load({str(run_dir / 'checkpoints' / 'last.pt')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", unsafe], check=True, capture_output=True)
    assert marker.read_text() == "code ran"
    marker.unlink()
    return run_dir, marker


def test_malicious_checkpoint_is_refused_and_no_code_runs(cli, malicious_checkpoint):
    run_dir, marker = malicious_checkpoint
    last = run_dir / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match="refused to load: not a plain-weights checkpoint"):
        load_checkpoint(last)
    for args in (("eval", run_dir), ("eval", last), ("run", "--resume", run_dir)):
        code, _, err = cli(*args)
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1
        assert "refused to load: not a plain-weights checkpoint (it would call exec when unpickled)" in err
    assert not marker.exists()


def test_safe_checkpoint_loader_needs_no_pickle_code(tmp_path):
    """Our own checkpoints hold only tensors and plain data: they load with weights_only (RNG states too)."""
    from vitkit.runs.resume import capture_rng

    path = tmp_path / "ok.pt"
    torch.save({"rng": capture_rng(torch.device("cpu"))}, path)
    assert load_checkpoint(path)["rng"]["python"][0] == 3
