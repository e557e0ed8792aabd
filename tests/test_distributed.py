"""``torchrun --nproc_per_node=2`` on CPU (gloo): trains digits, rank 0 alone writes one run directory."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, TINY_DIGITS


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes_write_one_run(tmp_path, strategy):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("depth = 2", "depth = 1").replace("epochs = 2", "epochs = 3"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vitkit", "run", str(recipe), "--set", f'output.dir="{tmp_path}"',
        "--set", f'train.strategy="{strategy}"', "--set", "output.plots=false",
    ]  # fmt: skip
    # a session of its own, so a hang can be ended with every worker (not only the launcher)
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    (run_dir,) = (tmp_path / "tiny").iterdir()  # one run directory, not one per rank
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == strategy
    assert summary["test_acc"] > 0.2 and summary["epochs_run"] == 3  # chance is 0.1
    assert stdout.count("epoch 3/3") == 1  # rank 0 alone prints
    assert Path(run_dir / "checkpoints" / "best.pt").is_file()
