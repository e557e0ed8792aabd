"""Load test of ``vitkit serve``: requests/s and p50/p99 latency with dynamic batching on and off, and the
in-process ``Predictor.predict`` img/s of the same model on the same images.

The same server command serves the same model file in both modes; only ``--max-batch`` differs (16 with
``--max-wait-ms 5``: batching on; 1: off). Modes are interleaved over ``--repeats`` rounds, each on a
fresh server, after ``--warmup`` requests. Clients are threads in this process posting JPEG bodies
(``image/jpeg``) with urllib, ``--clients`` at once, ``--requests`` in all.

Without ``--model``, the model is an untrained ``--arch`` (default ViT-Ti/16 at 224 px, 10 classes) written
as a vitkit ``model.safetensors`` with photo-folder metadata (crop_pct 0.875, ImageNet mean/std), so each
request is a real photo path: JPEG decode (reduced-size), resize, centre crop, forward. Speed does not
depend on the weights' values.

    PYTHONPATH=. python benchmarks/serve_load.py --out /tmp/serve_load
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import select
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_model(out: Path, arch: str, img_size: int, classes: int) -> Path:
    """An untrained ``arch`` as a vitkit model.safetensors with an imagefolder run's data metadata."""
    import torch

    from vitkit.models import create_model
    from vitkit.runs.checkpoint import save_safetensors

    torch.manual_seed(0)
    model = create_model(arch, img_size=img_size, in_chans=3, num_classes=classes)
    data = {
        "classes": [f"class_{i}" for i in range(classes)],
        "in_chans": 3,
        "img_size": img_size,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    path = out / "model.safetensors"
    save_safetensors(model, path, {"model": {"name": arch, "img_size": img_size}, "data": data})
    return path


def photos(count: int, width: int, height: int) -> list[bytes]:
    """``count`` JPEG photos (``benchmarks/make_photo_folder.py`` shapes) as bytes."""
    from make_photo_folder import SHAPES, draw_photo

    rng = random.Random(0)
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        draw_photo(SHAPES[i % len(SHAPES)], width, height, rng).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class Server:
    """``vitkit serve MODEL --port 0`` in a subprocess; ``url`` from the line it prints once it serves."""

    def __init__(self, model: Path, max_batch: int, max_wait_ms: float, threads: int | None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "vitkit", "serve", str(model), "--port", "0", "--device", "cpu"]
        command += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(50):
            ready, _, _ = select.select([self.process.stdout], [], [], 300)
            line = self.process.stdout.readline() if ready else ""
            if not line:
                self.stop()
                raise SystemExit("vitkit serve did not start")
            if " at http://" in line:
                self.url = line.split(" at ")[1].split()[0]
                return
        raise SystemExit("vitkit serve printed no URL")

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "health", timeout=60) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def post(url: str, body: bytes) -> float:
    """Seconds for one /predict of a JPEG body."""
    request = urllib.request.Request(url + "predict", data=body, headers={"Content-Type": "image/jpeg"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as answer:
        answer.read()
        assert answer.status == 200
    return time.perf_counter() - start


def load(url: str, bodies: list[bytes], requests: int, clients: int) -> dict[str, float]:
    """``requests`` posts from ``clients`` threads at once: requests/s and latency percentiles (ms)."""
    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        latencies = list(pool.map(lambda i: post(url, bodies[i % len(bodies)]), range(requests)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests_per_s": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
        "wall_s": wall,
    }


def in_process(model: Path, bodies: list[bytes], images: int, batch_size: int) -> float:
    """img/s of ``Predictor.predict`` on ``images`` of the bodies, ``batch_size`` at a time (after a warm-up),
    called from one worker thread as the server's model thread is: on a loaded 2-core machine torch's
    OpenMP forward pass of ViT-Ti in the main thread took 6 s against 0.12 s in a worker thread."""
    import vitkit

    predictor = vitkit.load(model, "cpu")  # in this process: torch's threads, or --threads
    items = [bodies[i % len(bodies)] for i in range(images)]

    def timed() -> float:
        predictor.predict(items[:batch_size], batch_size=batch_size)
        start = time.perf_counter()
        results = predictor.predict(items, batch_size=batch_size)
        assert all(r.error is None for r in results)
        return images / (time.perf_counter() - start)

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(timed).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="run directory, checkpoint or model.safetensors to serve")
    parser.add_argument("--arch", default="vit_tiny_patch16_224", help="untrained model when no --model")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=16, help="requests before timing, per server")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of (on, off), interleaved")
    parser.add_argument("--max-batch", type=int, default=16, help="batching on: --max-batch of the server")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--photo", default="640x480", help="WIDTHxHEIGHT of the JPEG requests")
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the server and the in-process model (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=Path("serve_load"), help="folder for the model and results")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or write_model(args.out, args.arch, args.img_size, 10)
    width, height = map(int, args.photo.split("x"))
    bodies = photos(32, width, height)
    modes = {"batching on": args.max_batch, "batching off": 1}
    rows: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for round_ in range(args.repeats):
        for mode, max_batch in modes.items():
            server = Server(model, max_batch, args.max_wait_ms, args.threads)
            try:
                load(server.url, bodies, args.warmup, args.clients)
                before = server.health()
                row = load(server.url, bodies, args.requests, args.clients)
                after = server.health()
            finally:
                server.stop()
            row["mean_batch"] = (after["images"] - before["images"]) / max(1, after["batches"] - before["batches"])
            rows[mode].append(row)
            print(f"round {round_ + 1} {mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    predict = {f"batch_size {b}": in_process(model, bodies, args.requests, b) for b in (args.max_batch, 1)}

    print(f"\n{args.requests} requests, {args.clients} clients, {width}x{height} JPEGs, model {model}")
    print(f"{'mode':14} {'req/s':>14} {'p50 ms':>16} {'p99 ms':>16} {'mean batch':>11}")
    for mode, runs in rows.items():

        def spread(key: str, runs: list[dict[str, float]] = runs) -> str:
            values = [r[key] for r in runs]
            return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

        print(
            f"{mode:14} {spread('requests_per_s'):>14} {spread('p50_ms'):>16} {spread('p99_ms'):>16} "
            f"{statistics.median(r['mean_batch'] for r in runs):>11.1f}"
        )
    for name, rate in predict.items():
        print(f"in-process Predictor.predict, {name}: {rate:.1f} img/s")
    (args.out / "serve_load.json").write_text(json.dumps({"servers": rows, "in_process": predict}, indent=2) + "\n")
    print(f"wrote {args.out / 'serve_load.json'}")


if __name__ == "__main__":
    main()
