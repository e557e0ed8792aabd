"""``vitkit export RUN`` (files for other runtimes, or timm's Hub folder) and ``vitkit push RUN ORG/NAME``."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import load_plugins


def add_export_arguments(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("model", help="run directory or checkpoint file")
    ex.add_argument(
        "--format",
        dest="fmt",
        choices=("safetensors", "torchscript", "onnx", "hf"),
        default="safetensors",
        help="hf: timm's Hub folder (config.json, model.safetensors, model card), see docs/share.md",
    )
    ex.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization of Linear layers (CPU)")
    ex.add_argument("--prune", type=float, metavar="AMOUNT", help="zero this share of Linear weights (0-1), globally")
    ex.add_argument(
        "--out", metavar="PATH", help="output file or hf folder (default: <run>/export/model.<format suffix> or hf/)"
    )
    ex.add_argument("--force", action="store_true", help="overwrite an existing output file (or non-empty folder)")


def export_main(args: argparse.Namespace) -> int:
    load_plugins(args)
    from vitkit.commands.export.formats import run_export

    run_export(args.model, args.fmt, args.quantize, args.prune, args.out, args.force)
    return 0


def add_push_arguments(push: argparse.ArgumentParser) -> None:
    push.add_argument("model", metavar="RUN", help="run directory, checkpoint, or a folder export --format hf wrote")
    push.add_argument("repo_id", metavar="ORG/NAME", help="Hub model repo (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--message", help="commit message (default: 'Add ORG/NAME (vitkit export --format hf)')")


def push_main(args: argparse.Namespace) -> int:
    from vitkit.commands.export.push import check_can_push, run_push

    token = check_can_push(args.repo_id)  # offline, no token: say so before plugins and the model load
    load_plugins(args)
    return run_push(args.model, args.repo_id, args.private, args.message, token)


COMMANDS = (
    Command(
        "export",
        "export a run's model: safetensors, TorchScript, ONNX or a Hugging Face Hub folder; int8, pruning",
        add_export_arguments,
        export_main,
    ),
    Command(
        "push", "upload a run's Hugging Face Hub folder (vitkit export --format hf)", add_push_arguments, push_main
    ),
)
