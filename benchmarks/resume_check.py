"""Kill + resume check on any device: a run killed mid-way and resumed must end with the metrics of an
uninterrupted run with the same seed.

Exact equality is a property of resume only when the kernels are deterministic: on a GPU, bf16/fp16
and the SDPA backward are not by default, so either pass ``--deterministic`` (``train.deterministic =
true``: exact equality expected) or a tolerance (``--rtol 1e-3``). The kill uses vitkit's test hook
``VITKIT_TEST_KILL_AFTER_TEMP`` (SIGKILL on the 3rd write of last.pt: after epoch 2, before its rename).

    python benchmarks/resume_check.py --deterministic            # exact, on the default device
    python benchmarks/resume_check.py --rtol 1e-3 --device cuda   # within 0.1 %, nondeterministic kernels
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
RECIPE = """
name = "resume_check"
seed = 3
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[augment]
train = [{{ name = "translate", pixels = 2 }}]
[train]
epochs = {epochs}
device = "{device}"
precision = "{precision}"
deterministic = {deterministic}
[output]
dir = "{out}"
plots = false
"""


def close(a: float, b: float, rtol: float) -> bool:
    """Equal (``rtol`` 0) or within ``rtol`` of the larger magnitude."""
    return a == b if rtol == 0 else math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * 1e-3)


def compare_runs(
    expected: list[dict[str, str]], got: list[dict[str, str]], expected_acc: float, got_acc: float, rtol: float = 0.0
) -> list[str]:
    """The differences between two runs' metrics.csv rows and test accuracy beyond ``rtol`` (empty: the same)."""
    problems = []
    if len(expected) != len(got):
        problems.append(f"{len(got)} epochs instead of {len(expected)}")
    for want, have in zip(expected, got, strict=False):
        for key in COMPARED:
            if not close(float(want[key]), float(have[key]), rtol):
                problems.append(f"epoch {want['epoch']} {key}: {have[key]} instead of {want[key]}")
    if not close(expected_acc, got_acc, rtol):
        problems.append(f"test_acc: {got_acc} instead of {expected_acc}")
    return problems


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vitkit", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _result(run_dir: Path) -> tuple[list[dict[str, str]], float]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    return rows, json.loads((run_dir / "summary.json").read_text())["test_acc"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (default auto)")
    parser.add_argument("--deterministic", action="store_true", help="train.deterministic = true (exact check)")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: exact)")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        recipe = out / "resume_check.toml"
        recipe.write_text(
            RECIPE.format(
                epochs=args.epochs,
                device=args.device,
                precision=args.precision,
                deterministic=str(args.deterministic).lower(),
                out=out / "runs",
            )
        )
        reference = _run([str(recipe), "--set", 'name="reference"'])
        if reference.returncode != 0:
            print(f"uninterrupted run failed:\n{reference.stderr}")
            return 1
        killed = _run([str(recipe), "--set", 'name="killed"'], {"VITKIT_TEST_KILL_AFTER_TEMP": "last.pt:3"})
        if killed.returncode != -signal.SIGKILL:
            print(f"the run was not killed by the test hook (exit {killed.returncode}):\n{killed.stderr}")
            return 1
        (run_dir,) = (out / "runs" / "killed").iterdir()
        resumed = _run(["--resume", str(run_dir)])
        if resumed.returncode != 0:
            print(f"resume failed:\n{resumed.stderr}")
            return 1
        (ref_dir,) = (out / "runs" / "reference").iterdir()
        expected, expected_acc = _result(ref_dir)
        got, got_acc = _result(run_dir)
        problems = compare_runs(expected, got, expected_acc, got_acc, args.rtol)
        mode = "exact" if args.rtol == 0 else f"rtol {args.rtol:g}"
        header = f"{args.epochs} epochs, killed after epoch 2, resumed ({mode}, deterministic={args.deterministic})"
        print(f"{header}: test_acc {got_acc:.4f} vs {expected_acc:.4f} uninterrupted")
        for problem in problems:
            print(f"  differs: {problem}")
        print("resume matches the uninterrupted run" if not problems else "RESUME DIFFERS")
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
