"""``vitkit bench MODEL_OR_RECIPE``: img/s, TFLOP/s and memory of a model or recipe (optionally vs timm)."""

from __future__ import annotations

import argparse

from vitkit.commands import Command


def _compile_value(value: str) -> str:
    if value != "auto":
        raise argparse.ArgumentTypeError(f"expected no value or auto, got {value!r} (put --compile after the target)")
    return value


def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("target", metavar="MODEL_OR_RECIPE", help="registered model name or TOML recipe")
    bench.add_argument("--batch-size", type=int, help="images per step (default: the recipe's, else 64)")
    bench.add_argument("--img-size", type=int, help="input size (default: the model's)")
    bench.add_argument("--patch-size", type=int, help="patch size (default: the model's)")
    bench.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16", "both"),
        help="default: the recipe's, else auto; both: fp32 and bf16",
    )
    bench.add_argument(
        "--compile",
        nargs="?",
        const=True,
        type=_compile_value,
        metavar="auto",
        help="torch.compile the model(s) first; --compile auto (after MODEL_OR_RECIPE): time eager and compiled "
        'training steps and report what train.compile = "auto" picks (default: the recipe\'s train.compile)',
    )
    bench.add_argument(
        "--run-steps",
        type=int,
        metavar="STEPS",
        help="compile auto: the run's training steps (batches over all epochs) to decide for; bench loads no "
        "data, so without it it reports from how many steps compiling pays",
    )
    bench.add_argument("--vs", choices=("timm",), help="also time timm's ViT (same config, same weights), interleaved")
    bench.add_argument(
        "--grad-checkpointing", action="store_true", help="also time the model with gradient checkpointing"
    )
    bench.add_argument("--patch-drop", type=float, metavar="RATE", help="also time the model with this patch dropout")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="training steps only (forward, backward, AdamW)")
    mode.add_argument("--infer", action="store_true", help="inference only (no grad, eval mode)")
    bench.add_argument("--steps", type=int, default=5, help="timed steps per repeat (default: 5)")
    bench.add_argument("--repeats", type=int, default=7, help="repeats; the median is reported (default: 7)")
    bench.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    bench.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default: the recipe's, else auto)")
    bench.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")


def main(args: argparse.Namespace) -> int:
    from vitkit.commands.bench.command import bench_command

    return bench_command(args)


COMMANDS = (
    Command(
        "bench",
        "measure img/s, TFLOP/s and memory of a model or recipe (optionally vs timm)",
        add_arguments,
        main,
        plugin_flags=False,
    ),
)
