"""``vitkit run DIR``'s choice line states what will run: readable images only, the recipe after ``--set``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib

from tests.conftest import ROOT
from tests.photos import make_photo_folder


def _vitkit(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """``vitkit ARGS`` as a user runs it, offline with an empty Hugging Face cache."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cwd / "hf-cache")}
    command = [sys.executable, "-m", "vitkit", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)


def test_i23_8_choice_line_counts_readable_images_and_the_set_epochs(tmp_path):
    photos = make_photo_folder(tmp_path / "my_photos", "flat", classes=3, per_class=8, min_size=24, max_size=48)
    corrupt = sorted(photos.rglob("*.jpg"))[0]
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # a truncated JPEG: opens, fails to decode
    result = _vitkit("run", photos, "--dry-run", "--set", "train.epochs=3", "--set", "optimizer.lr=5e-4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[0]
    # 23 readable of 24; the default carve (0.1 val, 0.1 test, at least one each) leaves 5 + 6 + 6 = 17 to train
    assert "(flat, 3 classes, 23 images, 1 unreadable skipped, 17 to train)" in line, line
    assert "3 epochs (~12 updates), batch 4, lr 0.0005 on cpu" in line, line  # 17 // 4 = 4 updates an epoch
    recipe = tomllib.loads(result.stdout)
    assert recipe["train"]["epochs"] == 3 and recipe["data"]["batch_size"] == 4
