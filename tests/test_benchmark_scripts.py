"""The benchmark shell scripts: --help prints usage, and a failed step fails the script (issue 17 items 17, 21)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["gpu.sh", "gpu_reliability_check.sh"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")


@pytest.mark.parametrize("script", SCRIPTS)
def test_item21_help_prints_usage_and_runs_nothing(script, tmp_path):
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PYTHON": "/bin/false"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.lower().startswith("usage:"), result.stdout
    assert "--dry-run" in result.stdout
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.parametrize("script", SCRIPTS)
def test_item21_a_failed_step_fails_the_script(script, tmp_path):
    """Under a python that fails every command (as one without torch does), the script exits non-zero."""
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\necho 'no torch here' >&2\nexit 1\n")
    failing.chmod(0o755)
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / script), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PYTHON": str(failing)},
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "FAILED" in result.stdout + result.stderr


def test_item17_resume_check_compares_exactly_or_within_a_stated_tolerance():
    """The GPU resume check: exact with deterministic kernels, else within --rtol (benchmarks/resume_check.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("resume_check", ROOT / "benchmarks" / "resume_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = {"epoch": "1", "train_loss": "0.5", "train_acc": "0.8", "val_loss": "0.4", "val_acc": "0.9", "lr": "0.001"}
    near = {**row, "val_loss": "0.40001"}
    assert module.compare_runs([row], [row], 0.9, 0.9) == []
    assert module.compare_runs([row], [near], 0.9, 0.9) == ["epoch 1 val_loss: 0.40001 instead of 0.4"]
    assert module.compare_runs([row], [near], 0.9, 0.9, rtol=1e-3) == []
    assert module.compare_runs([row], [row, row], 0.9, 0.9) == ["2 epochs instead of 1"]
    assert module.compare_runs([row], [row], 0.9, 0.8, rtol=1e-3) == ["test_acc: 0.8 instead of 0.9"]
    script = (ROOT / "benchmarks" / "gpu_reliability_check.sh").read_text()
    assert "resume_check.py --deterministic" in script
    assert "pytest -q -p no:cacheprovider tests/test_resume.py --durations=3" not in script  # the exact GPU check
