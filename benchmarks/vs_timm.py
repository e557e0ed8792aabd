"""vitkit's ViT vs timm's VisionTransformer: same config, same weights, same optimizer, same threads.

Both models are timed in one process, interleaved (A B, B A, ...) after a warm-up, and the
median of the repeats is kept (``vitkit.commands.bench.measure``). Prints img/s and the vitkit/timm ratio
for a training step (forward, backward, AdamW) and for inference (no grad, eval mode).

    python benchmarks/vs_timm.py                 # the four CPU configs
    python benchmarks/vs_timm.py --quick         # fewer repeats, for a smoke check
    python benchmarks/vs_timm.py --config tiny-32 --config small-224 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time

#: name -> (model, img_size, patch_size, num_classes, batch size on CPU)
CONFIGS = {
    "tiny-32": ("vit_tiny_patch16_224", 32, 4, 10, 64),
    "tiny-224": ("vit_tiny_patch16_224", 224, 16, 1000, 8),
    "small-32": ("vit_small_patch16_224", 32, 4, 10, 64),
    "small-224": ("vit_small_patch16_224", 224, 16, 1000, 8),
}


def _ratio(result: dict, mode: str) -> str:
    value = result["ratios"][mode]
    return f"[{'green' if value >= 1.0 else 'yellow'}]{value:.3f}[/]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", choices=sorted(CONFIGS), help="repeatable; default: all")
    parser.add_argument("--quick", action="store_true", help="2 timed steps x 3 repeats, 1 warm-up step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per model; the median is kept")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, help="override every config's batch size")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--compile", action="store_true", help="torch.compile both models")
    parser.add_argument("--json", metavar="FILE", help="also write every result to FILE")
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    import vitkit
    from vitkit.commands.bench.measure import BenchSpec, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    iters, repeats, warmup = (2, 3, 1) if args.quick else (args.steps, args.repeats, args.warmup)
    console = Console(highlight=False, width=132)
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.precision}"
        f"{', compiled' if args.compile else ''}; {iters} steps x {repeats} repeats, {warmup} warm-up"
    )
    table = Table(title="vitkit / timm (img/s, median of interleaved repeats)")
    for column in (
        "config",
        "batch",
        "vitkit train",
        "timm train",
        "train ratio",
        "vitkit infer",
        "timm infer",
        "infer ratio",
        "spread",
    ):
        table.add_column(column, justify="left" if column == "config" else "right")
    results = []
    for name in args.config or list(CONFIGS):
        model_name, img, patch, classes, batch = CONFIGS[name]
        batch = args.batch_size or batch
        torch.manual_seed(0)
        model = vitkit.create_model(model_name, img_size=img, patch_size=patch, num_classes=classes).to(args.device)
        start = time.perf_counter()
        result = run_bench(
            BenchSpec(
                model,
                model_name,
                img,
                3,
                classes,
                batch_size=batch,
                precision=args.precision,
                compile=args.compile,
                vs_timm=True,
                iters=iters,
                repeats=repeats,
                warmup=warmup,
            )
        )
        result["config"] = name
        results.append(result)
        rate = {(r["model"], r["mode"]): r["img_per_s"] for r in result["rows"]}
        spread = max(r["spread"] for r in result["rows"])

        table.add_row(
            name,
            str(batch),
            f"{rate['vitkit', 'train']:.1f}",
            f"{rate['timm', 'train']:.1f}",
            _ratio(result, "train"),
            f"{rate['vitkit', 'infer']:.1f}",
            f"{rate['timm', 'infer']:.1f}",
            _ratio(result, "infer"),
            f"{spread:.0%}",
        )
        console.print(
            f"{name}: done in {time.perf_counter() - start:.0f} s "
            f"(params {result['params']:,}, {result['gflops_per_img']:.2f} GFLOPs/img)"
        )
    console.print(table)
    console.print(
        "spread: (slowest - fastest) / median repeat, the worst of the four rows; high means a loaded machine"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
