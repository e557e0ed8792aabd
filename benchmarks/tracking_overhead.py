"""What a tracking plugin costs a whole run: the digits recipe with no tracker, with vitkit-tensorboard and
with vitkit-mlflow, interleaved round by round, in one invocation (docs/tracking.md).

    pip install ./plugins/vitkit-tensorboard ./plugins/vitkit-mlflow
    python benchmarks/tracking_overhead.py [--epochs 150] [--rounds 3] [--threads N]

For each run: the command's wall time, its CPU time (user + system of the process and its children:
on a machine shared with other work, wall time mostly measures the others, CPU time what this run
did) and the training loop's time (``summary.json`` ``wall_time_s``). The table gives medians and
each tracker's ratio to no tracker. MLflow writes to one SQLite file in a temporary folder, created
before the first round (MLflow's table creation is a once-per-store cost, not a per-run one).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("none", "tensorboard", "mlflow")


def environment(variant: str, store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TENSORBOARD_LOGDIR")}
    env["VITKIT_TENSORBOARD"] = "1" if variant == "tensorboard" else "0"
    if variant == "mlflow":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    return env


def run_once(variant: str, epochs: int, threads: int | None, out: Path, store: Path, tag: str) -> dict[str, float]:
    """One ``vitkit run recipes/digits.toml``: wall, CPU and loop seconds."""
    runs = out / "runs" / f"{variant}-{tag}"
    command = [sys.executable, "-m", "vitkit", "run", str(ROOT / "recipes" / "digits.toml")]
    command += ["--set", f"train.epochs={epochs}", "--set", f'output.dir="{runs}"']
    if threads:
        command += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=environment(variant, store), cwd=out, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    (summary,) = runs.glob("*/*/summary.json")
    loop = json.loads(summary.read_text())["wall_time_s"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "loop": loop}


def create_store(store: Path, out: Path) -> None:
    """MLflow's tables in a new SQLite file (its first use costs 10-15 s on a 2-core machine)."""
    uri = f"sqlite:///{store}"
    code = f"import mlflow; mlflow.MlflowClient(tracking_uri={uri!r}).search_experiments()"
    subprocess.run([sys.executable, "-c", code], cwd=out, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=150, help="digits epochs per run (the recipe's 150)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs the three variants in turn")
    parser.add_argument("--threads", type=int, default=None, help="vitkit run --threads (default: vitkit's choice)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="vitkit-tracking-"))
    store = out / "mlflow.db"
    create_store(store, out)
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    print("variant      round  wall_s   cpu_s  loop_s", flush=True)
    for round_ in range(1, args.rounds + 1):
        order = VARIANTS if round_ % 2 else tuple(reversed(VARIANTS))  # alternate who runs first
        for variant in order:
            row = run_once(variant, args.epochs, args.threads, out, store, str(round_))
            results[variant].append(row)
            print(f"{variant:12s} {round_:5d} {row['wall']:7.1f} {row['cpu']:7.1f} {row['loop']:7.1f}", flush=True)
    print(f"\nmedians over {args.rounds} rounds of {args.epochs} epochs; ratio: each run over the no-tracker run")
    print("of its round, median (min-max)")
    print("variant      wall_s (ratio)            cpu_s (ratio)             loop_s (ratio)")
    for variant in VARIANTS:
        cells = []
        for key in ("wall", "cpu", "loop"):
            values = [r[key] for r in results[variant]]
            ratios = [r[key] / n[key] for r, n in zip(results[variant], results["none"], strict=True)]
            spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
            cells.append(f"{statistics.median(values):7.1f} ({statistics.median(ratios):.3f}, {spread})")
        print(f"{variant:12s} " + "  ".join(cells))
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; runs in {out}")


if __name__ == "__main__":
    main()
