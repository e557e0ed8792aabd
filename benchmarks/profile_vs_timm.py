"""torch.profiler, op by op: vitkit's ViT vs timm's (same config and weights), training step or inference.

Prints, per aten op, the number of calls and the self CPU time of each model, so a ratio below 1.00
in ``vs_timm.py`` can be traced to the ops (or the Python between them) that cause it.

    python benchmarks/profile_vs_timm.py                       # vit_tiny, 32 px, patch 4, batch 64, train
    python benchmarks/profile_vs_timm.py --model vit_small_patch16_224 --img-size 224 --patch-size 16 \\
        --batch-size 8 --mode infer
"""

from __future__ import annotations

import argparse
import sys
import time


def profile(step, steps: int) -> tuple[dict[str, tuple[int, float]], float]:
    """{op: (calls, self CPU ms)} over ``steps`` calls, and the wall time per call in ms."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - start) / steps * 1e3
    ops = {e.key: (e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()}
    return ops, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    import vitkit
    from vitkit.commands.bench.measure import infer_step, train_step
    from vitkit.commands.bench.timm_twin import timm_twin

    if args.threads:
        torch.set_num_threads(args.threads)
    model = vitkit.create_model(args.model, img_size=args.img_size, patch_size=args.patch_size, num_classes=10)
    results = {}
    for name, candidate in (("vitkit", model), ("timm", timm_twin(model))):
        if args.mode == "train":
            step = train_step(candidate, args.batch_size, args.img_size, 3, 10, "fp32")
        else:
            step = infer_step(candidate, args.batch_size, args.img_size, 3, "fp32")
        step()
        step()  # warm-up
        results[name] = profile(step, args.steps)
    (ours, our_wall), (theirs, their_wall) = results["vitkit"], results["timm"]
    table = Table(
        title=f"{args.model} {args.img_size}/{args.patch_size} batch {args.batch_size} {args.mode}: "
        f"per-op self CPU over {args.steps} steps"
    )
    for column in ("op", "calls vitkit", "calls timm", "ms vitkit", "ms timm"):
        table.add_column(column, justify="left" if column == "op" else "right")
    keys = sorted(set(ours) | set(theirs), key=lambda k: -max(ours.get(k, (0, 0))[1], theirs.get(k, (0, 0))[1]))
    for key in keys[: args.top]:
        a, b = ours.get(key, (0, 0.0)), theirs.get(key, (0, 0.0))
        table.add_row(key[:60], str(a[0]), str(b[0]), f"{a[1]:.1f}", f"{b[1]:.1f}")
    console = Console(highlight=False, width=132)
    console.print(table)
    differ = [k for k in set(ours) | set(theirs) if ours.get(k, (0,))[0] != theirs.get(k, (0,))[0]]
    counts = [f"{k} ({ours.get(k, (0,))[0]} vs {theirs.get(k, (0,))[0]})" for k in sorted(differ)]
    console.print(f"ops whose call counts differ (vitkit vs timm): {', '.join(counts) or 'none'}")
    console.print(f"wall per step (profiled, not interleaved): vitkit {our_wall:.1f} ms, timm {their_wall:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
