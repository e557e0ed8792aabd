"""What ``train.precision = "auto"`` and ``train.compile = "auto"`` choose for a recipe, and what the choice
is worth: one ``vitkit run`` with both on auto and one in fp32 without compiling, per round, interleaved
(so machine load falls on both alike); reports each choice and the ratio of training img/s (the last
epoch's, after any compile) of the auto run to the fp32 eager one.

    python benchmarks/auto_choices.py recipes/digits.toml --rounds 2 --set train.epochs=5
    python benchmarks/make_photo_folder.py /tmp/photos --classes 4 --per-class 50 --min-size 240 --max-size 400
    python benchmarks/auto_choices.py /tmp/photos --set model.name='"vit_tiny_patch16_224"' --set model.img_size=224
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

SETTINGS = {
    "auto": ['train.precision="auto"', 'train.compile="auto"'],
    "fp32 eager": ['train.precision="fp32"', "train.compile=false"],
}


def one_run(source: str, out: Path, settings: list[str], sets: list[str]) -> dict[str, object]:
    """Train once; what it chose and the last epoch's training img/s."""
    args = [sys.executable, "-m", "vitkit", "run", source, "--set", f'output.dir="{out}"']
    for item in [*sets, *settings]:
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    (summary_path,) = out.glob("**/summary.json")
    summary = json.loads(summary_path.read_text())
    with open(summary_path.parent / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = [line.strip() for line in done.stdout.splitlines() if "auto:" in line or "compile" in line.lower()]
    return {
        "precision": summary["precision"],
        "compile": (summary.get("compile_auto") or {}).get("choice", "off"),
        "img_per_s": float(rows[-1]["img_per_s"]),
        "test_acc": summary.get("test_acc"),
        "lines": lines,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a recipe or a photo folder (as vitkit run takes)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="recipe override for both runs")
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            runs = {}
            for tag, settings in SETTINGS.items():
                runs[tag] = one_run(args.source, Path(tmp) / f"{round_}-{tag.replace(' ', '_')}", settings, args.sets)
                print(tag, json.dumps(runs[tag]), flush=True)
            ratios.append(runs["auto"]["img_per_s"] / runs["fp32 eager"]["img_per_s"])
            auto = runs["auto"]
            print(
                f"round {round_}: auto chose precision {auto['precision']}, compile {auto['compile']}; "
                f"img/s auto / fp32 eager = {ratios[-1]:.2f}",
                flush=True,
            )
    print(f"\n{args.source} {' '.join(args.sets)}")
    print(f"img/s ratio, auto / fp32 eager: median {statistics.median(ratios):.2f} over {len(ratios)} rounds {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
