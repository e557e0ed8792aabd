"""Progressive resizing against none, side by side: one ``vitkit run`` each way per seed, interleaved (so
machine load falls on both alike); reports wall time, time to a validation accuracy, test accuracy and ratios.

    python benchmarks/progressive.py recipes/digits.toml --progressive "{start=0.5,until=0.5}" --seeds 0 1 2 \\
        --target 0.95 --set train.epochs=60
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(recipe: str, out: Path, seed: int, progressive: str | None, sets: list[str]) -> dict[str, object]:
    """Train once; the summary and the per-epoch rows of metrics.csv."""
    tag = "progressive" if progressive else "plain"
    args = [sys.executable, "-m", "vitkit", "run", recipe, "--set", f"seed={seed}", "--set", "output.plots=false"]
    args += ["--set", f'output.dir="{out / tag}"']
    for item in sets:
        args += ["--set", item]
    if progressive:
        args += ["--set", f"train.progressive={progressive}"]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    (summary_path,) = (out / tag).glob("*/*/summary.json")  # one run under each out/tag
    summary = json.loads(summary_path.read_text())
    with open(summary_path.parent / "metrics.csv", newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    return {"summary": summary, "rows": rows}


def time_to(rows: list[dict[str, float]], target: float) -> float | None:
    """Seconds from the run's start to the end of the first epoch whose val_acc reaches ``target``."""
    return next((row["time"] for row in rows if row["val_acc"] >= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--progressive", default="{start=0.5,until=0.5}", help="the train.progressive value")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=0.95, help="validation accuracy to time")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override for both")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float | None]]] = {"plain": [], "progressive": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for tag, spec in (("plain", None), ("progressive", args.progressive)):
                out = Path(tmp) / f"seed{seed}"
                run = one_run(args.recipe, out, seed, spec, args.sets)
                summary, rows = run["summary"], run["rows"]
                figures = {
                    "seed": seed,
                    "wall_s": summary["wall_time_s"],
                    "epoch_s": summary["wall_time_s"] / len(rows),
                    "to_target_s": time_to(rows, args.target),
                    "best_val_acc": summary["best_val_acc"],
                    "test_acc": summary["test_acc"],
                }
                results[tag].append(figures)
                print(tag, json.dumps(figures), flush=True)
    print(f"\n{args.recipe} {' '.join(args.sets)}; progressive = {args.progressive}; target val_acc {args.target}")
    print(f"{'seed':>4} {'wall ratio':>10} {'to-target ratio':>15} {'test plain':>10} {'test prog':>9}")
    walls, targets = [], []
    for plain, prog in zip(results["plain"], results["progressive"], strict=True):
        wall = prog["wall_s"] / plain["wall_s"]
        walls.append(wall)
        to = None
        if plain["to_target_s"] and prog["to_target_s"]:
            to = prog["to_target_s"] / plain["to_target_s"]
            targets.append(to)
        to_text = f"{to:.2f}" if to is not None else "n/a"
        print(f"{plain['seed']:>4} {wall:>10.2f} {to_text:>15} {plain['test_acc']:>10.4f} {prog['test_acc']:>9.4f}")
    for tag in ("plain", "progressive"):
        accs = [r["test_acc"] for r in results[tag]]
        print(f"{tag}: test acc mean {statistics.mean(accs):.4f} (min {min(accs):.4f}, max {max(accs):.4f})")
    print(f"wall-time ratio: median {statistics.median(walls):.2f} (range {min(walls):.2f}-{max(walls):.2f})")
    if targets:
        print(f"time-to-target ratio: median {statistics.median(targets):.2f} ({min(targets):.2f}-{max(targets):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
