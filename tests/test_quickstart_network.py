"""``vitkit run DIR`` and the Hugging Face hub, against a fake hub on 127.0.0.1 (never the network): the
probe goes where the download would go (``HF_ENDPOINT``, through ``HTTP(S)_PROXY`` unless ``NO_PROXY``),
and weights chosen but then not fetched mean training from scratch, said in the choice line."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT
from tests.photos import make_photo_folder
from vitkit.commands.run.folder import PRETRAINED, SCRATCH

WEIGHTS = b"\0" * 100  # what the fake hub serves (it never needs to be a real weights file)


class FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers ``HEAD .../resolve/main/model.safetensors`` as the hub does; a ``GET`` of it sends 10 bytes
    of 100 and hangs up (``cut_download``) or the whole file. As a proxy it sees absolute URLs."""

    cut_download = True
    seen: list[str]

    def _headers(self) -> bool:
        self.seen.append(f"{self.command} {self.path}")
        if not urlsplit(self.path).path.endswith("/resolve/main/model.safetensors"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", '"fake"')
        self.send_header("Content-Length", str(len(WEIGHTS)))
        self.end_headers()
        return True

    def do_HEAD(self) -> None:
        self._headers()

    def do_GET(self) -> None:
        if self._headers():
            self.wfile.write(WEIGHTS[:10] if self.cut_download else WEIGHTS)
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def fake_hub(cut_download: bool = True) -> Iterator[tuple[str, list[str]]]:
    """(its URL, the requests it saw); it stops at the end of the block, or by itself after 120 s."""
    seen: list[str] = []
    handler = type("Handler", (FakeHub,), {"cut_download": cut_download, "seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(120, server.shutdown)
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def vitkit(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m vitkit ARGS`` with an empty Hugging Face cache and no proxy unless ``env`` sets one."""
    base = {
        k: v for k, v in os.environ.items() if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    }
    base.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_OFFLINE="0",
        VITKIT_TENSORBOARD="0",
    )
    base.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "vitkit", *args], env={**base, **env}, capture_output=True, text=True,
        timeout=600, cwd=tmp_path,
    )  # fmt: skip


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_photo_folder(tmp_path / "photos", "flat", classes=3, per_class=8, min_size=24, max_size=48)


@pytest.mark.slow
def test_i22_11_the_probe_goes_through_the_proxy_the_download_would_use(tmp_path, photos):
    hub_url = closed_port_url()  # direct, the hub is unreachable; the proxy reaches it
    with fake_hub() as (proxy, seen):
        done = vitkit(
            tmp_path, "run", str(photos), "--dry-run", HF_ENDPOINT=hub_url, HTTP_PROXY=proxy, HTTPS_PROXY=proxy
        )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert f"-> {PRETRAINED['cpu']} pretrained at 224 px" in first and "downloaded into the Hugging Face cache" in first
    assert f"HEAD {hub_url}/timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k/resolve/main/model.safetensors" in seen
    assert not any(line.startswith("GET") and "model.safetensors" in line for line in seen)  # --dry-run fetches nothing

    # NO_PROXY for the hub's host: the probe goes direct, finds nothing listening, and says so
    with fake_hub() as (proxy, seen):
        done = vitkit(
            tmp_path, "run", str(photos), "--dry-run", HF_ENDPOINT=hub_url, HTTP_PROXY=proxy, NO_PROXY="127.0.0.1"
        )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert f"-> {SCRATCH} from scratch" in first and "offline: 127.0.0.1 is unreachable" in first
    assert not seen


@pytest.mark.slow
def test_i22_11_weights_chosen_but_not_fetched_mean_training_from_scratch(tmp_path, photos):
    with fake_hub(cut_download=True) as (hub_url, seen):
        done = vitkit(tmp_path, "run", str(photos), "--set", "train.epochs=1", HF_ENDPOINT=hub_url)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    chose = [line for line in done.stdout.splitlines() if line.startswith(f"vitkit run {photos} chose:")]
    assert len(chose) == 2 and f"-> {PRETRAINED['cpu']} pretrained" in chose[0]  # the probe found the file
    assert f"-> {SCRATCH} from scratch at 64 px, no pretrained weights (fetching " in chose[1]
    assert f"from {hub_url} failed: peer closed connection" in chose[1] and "set model.checkpoint_path" in chose[1]
    assert any(line.startswith("GET") and "model.safetensors" in line for line in seen)
    (run_dir,) = (tmp_path / "runs" / "photos").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == SCRATCH and summary["epochs_run"] == 1


@pytest.mark.slow
def test_i22_11_a_recipe_whose_pretrained_download_fails_stops_with_one_line(tmp_path, photos):
    """A recipe that asks for pretrained weights gets them or stops: one line, exit 2, no traceback."""
    recipe = ROOT / "recipes" / "folder_finetune.toml"
    with fake_hub(cut_download=True) as (hub_url, _):
        done = vitkit(tmp_path, "run", str(recipe), "--set", f"data.root={photos}", HF_ENDPOINT=hub_url)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("vitkit: error:")]
    assert "model.pretrained: pretrained weights timm/vit_small_patch16_224" in line
    assert "the download failed (peer closed connection" in line and "model.checkpoint_path" in line
