"""``vitkit serve RUN``: a trained model over HTTP, POST /predict with dynamic batching, a web page at /."""

from __future__ import annotations

import argparse

from vitkit.commands import Command
from vitkit.commands.common import load_plugins


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("model", metavar="RUN_OR_DIR", help="run directory, checkpoint or model.safetensors")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one, printed)")
    serve.add_argument("--max-batch", type=int, default=16, help="images per forward pass at most (default 16)")
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="wait for more images after the first (default 5 ms)"
    )
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    serve.add_argument("--tta", choices=("flip", "crops"), help="average probabilities over flipped or cropped views")


def main(args: argparse.Namespace) -> int:
    load_plugins(args)
    from vitkit.commands.serve.server import serve

    return serve(
        args.model, args.host, args.port, args.max_batch, args.max_wait_ms, args.max_upload_mb, args.device, args.tta
    )


COMMANDS = (
    Command(
        "serve",
        "serve a trained model over HTTP: POST /predict with dynamic batching, a web page at /",
        add_arguments,
        main,
    ),
)
