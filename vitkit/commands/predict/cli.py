"""``vitkit predict MODEL PATH...``: classify your own images with a trained run."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import load_plugins


def add_arguments(pr: argparse.ArgumentParser) -> None:
    pr.add_argument("model", help="run directory, checkpoint (best.pt / last.pt) or model.safetensors")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    pr.add_argument("--topk", type=int, default=3, help="labels shown per image (default 3)")
    pr.add_argument("--out", metavar="FILE.png", help="write a grid of the images with their predictions")
    pr.add_argument("--json", dest="json_path", metavar="FILE", help="write all results as JSON")
    pr.add_argument("--attention", action="store_true", help="overlay attention rollout and last-layer attention")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    pr.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    pr.add_argument("--tta", choices=("flip", "crops"), help="average probabilities over flipped or cropped views")


def main(args: argparse.Namespace) -> int:
    load_plugins(args)
    from vitkit.commands.predict.command import run_predict

    return run_predict(
        args.model, args.paths, args.topk, args.out, args.json_path, args.attention, args.device, args.batch_size,
        args.tta,
    )  # fmt: skip


COMMANDS = (Command("predict", "classify your own images with a trained run", add_arguments, main),)
