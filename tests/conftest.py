"""Shared fixtures: a tiny, fast digits recipe and a helper that runs the CLI in-process."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vitkit.cli import main

ROOT = Path(__file__).resolve().parents[1]

# CI installs every plugins/* package; the TensorBoard plugin would then trace a graph and write events
# in every test's run (seconds each). Its own tests switch it on (tests/test_tracking_tensorboard.py);
# run the suite with VITKIT_TENSORBOARD=1 to exercise it everywhere.
os.environ.setdefault("VITKIT_TENSORBOARD", "0")
RECIPES = ROOT / "recipes"


def torchrun_vitkit(args: list, **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 -m vitkit ARGS`` (CPU, gloo, one thread per process)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vitkit"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=900)


def installed(distribution: str) -> bool:
    """Whether a distribution (a plugin package under plugins/, say) is installed."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def cli(capsys):
    """Run ``vitkit ARGS`` in this process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe file into tmp_path; returns its path."""

    def write(text: str, name: str = "recipe.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


TINY_DIGITS = """
name = "tiny"
[model]
name = "vit_nano_patch4_16"
depth = 2
[data]
dataset = "digits"
batch_size = 32
[optimizer]
name = "adamw"
lr = 3e-3
[train]
epochs = 2
"""
