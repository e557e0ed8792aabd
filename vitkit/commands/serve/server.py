"""``vitkit serve``: a trained model behind HTTP (FastAPI on uvicorn) with dynamic batching and a web page.

The model is loaded once (``vitkit.load``, on the GPU when there is one). A request's images are read
where ``vitkit predict`` reads files, ``Predictor.view`` (bytes are decoded exactly as a file is), in
worker threads; their views join one queue, and a single batching task takes up to ``max_batch`` of
them, waiting at most ``max_wait_ms`` after the first, and runs ``Predictor.probabilities`` on them in
the one model thread. So a file gives ``vitkit predict``'s numbers, and requests that arrive together
share a forward pass.

Endpoints: ``POST /predict`` (the image as the raw body with an ``image/*`` Content-Type, or multipart
``file`` fields), ``POST /attention`` (PNG: the model's view with its attention rollout over it),
``GET /health``, ``GET /`` (the page, ``vitkit.commands.serve.page``). A bad request gets a 4xx with a
one-line JSON ``{"error": ...}``; the server goes on.

(No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations at definition.)
"""

import asyncio
import io
import socket
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vitkit.commands.serve.batching import Batcher
from vitkit.errors import UserError

if TYPE_CHECKING:
    import torch
    from starlette.requests import Request

    from vitkit.commands.predict.predictor import Predictor

DEFAULT_TOPK = 5
MAX_FILES = 64  # multipart `file` fields in one request
ATTENTION_SIDE = 320  # longest side of the attention picture, in pixels
DRAIN_FACTOR = 4  # an over-size upload is read (and dropped) up to this many times the limit, then cut
ANSWER_KEYS = ("label", "probability", "topk")  # of a Prediction, per image of a /predict answer


class BadRequest(Exception):
    """A request the server answers with ``status`` and a one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -------------------------------------------------------------------------------- request bodies


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``chunks`` passed on while their total is at most ``limit`` bytes; past it, the rest is read and
    dropped (up to ``DRAIN_FACTOR`` times the limit, so the client gets to read the answer) and
    ``BadRequest`` 413 raised."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            async for more in chunks:
                total += len(more)
                if total > DRAIN_FACTOR * limit:
                    break
            raise BadRequest(413, f"upload over the size limit of {limit / 2**20:g} MB (--max-upload-mb)")
        yield chunk


async def request_images(request: "Request", limit: int) -> list[bytes]:
    """The image files of a request: its raw body (``image/*``) or its multipart ``file`` fields."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = read_limited(request.stream(), limit)
    if kind == "multipart/form-data":
        parser = MultiPartParser(request.headers, body, max_files=MAX_FILES, max_fields=MAX_FILES)
        try:
            form = await parser.parse()
        except MultiPartException as err:
            raise BadRequest(400, f"malformed multipart form ({err.message})") from None
        files = form.getlist("file")
        if not files:
            raise BadRequest(400, "no 'file' field in the form (send images as multipart fields named 'file')")
        if not all(isinstance(f, UploadFile) for f in files):
            raise BadRequest(400, "the form field 'file' must hold a file, not text")
        images = [await f.read() for f in files]
        await form.close()
    elif kind.startswith("image/") or kind == "application/octet-stream":
        images = [b"".join([chunk async for chunk in body])]
    else:
        raise BadRequest(
            415,
            f"Content-Type {kind or 'missing'}: send an image as the body (Content-Type image/...) "
            "or as multipart/form-data fields named 'file'",
        )
    if any(not image for image in images):
        raise BadRequest(400, "empty image: the request body (or a 'file' field) has no bytes")
    return images


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image with more than ``max_pixels`` pixels from its header alone, before decoding it
    (a decompression bomb: a small file of a huge image)."""
    from PIL import Image

    from vitkit.commands.predict.predictor import reading

    try:
        with reading(), warnings.catch_warnings():  # reading: a non-image or a broken header is a UserError
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides below
            try:
                with Image.open(io.BytesIO(data)) as img:  # reads the header only
                    width, height = img.size
            except Image.DecompressionBombError:  # over twice PIL's limit
                raise BadRequest(413, f"image over the limit of {max_pixels} pixels (decompression bomb?)") from None
    except UserError as err:
        raise BadRequest(422, str(err)) from None
    if width * height > max_pixels:
        raise BadRequest(413, f"image of {width}x{height} pixels is over the limit of {max_pixels} pixels")


def read_view(predictor: "Predictor", data: bytes, max_pixels: int) -> "torch.Tensor":
    """What the model is given of an image file's bytes (``Predictor.view``); 4xx ``BadRequest`` if unusable."""
    check_pixels(data, max_pixels)
    try:
        return predictor.view(data)
    except UserError as err:
        raise BadRequest(422, str(err)) from None


def answer(predictor: "Predictor", probabilities: "torch.Tensor", topk: int) -> dict[str, Any]:
    """One image's entry of a ``/predict`` answer, from its class probabilities: ``label``,
    ``probability`` and ``topk`` of its ``Prediction``, as ``vitkit predict --json`` writes them (the
    labels ``Predictor.topk`` chose; a multi-label image with no label above its threshold: ``None``,
    ``None`` and ``[]``)."""
    from vitkit.commands.predict.predictor import Prediction

    row = Prediction("", predictor.topk(probabilities[None], topk)[0]).as_dict()
    return {key: row[key] for key in ANSWER_KEYS}


# ---------------------------------------------------------------------------------------- attention


def attention_png(predictor: "Predictor", view: "torch.Tensor") -> bytes:
    """A PNG of the model's view of an image with its attention rollout as a heat map over it."""
    import matplotlib
    import numpy as np
    import torch
    from PIL import Image

    from vitkit.commands.predict.attention_maps import attention_maps

    seen = predictor.seen(view)  # the centre crop of an imagefolder run's base image
    picture = seen.float() / 255.0 if seen.dtype == torch.uint8 else seen.float()
    height, width = picture.shape[-2:]
    scale = ATTENTION_SIDE / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    (maps,) = attention_maps(predictor.model, predictor.to_input([view]), [size])
    picture = torch.nn.functional.interpolate(picture[None], size, mode="bilinear", antialias=scale < 1)[0]
    rgb = picture.clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy()
    heat = matplotlib.colormaps["jet"](maps.rollout.numpy())[..., :3]  # as `vitkit predict --attention` draws it
    blended = (0.5 * rgb + 0.5 * heat) * 255
    out = io.BytesIO()
    Image.fromarray(np.asarray(blended.round(), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


# ----------------------------------------------------------------------------------------- the app


@dataclass
class ServeOptions:
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0
    max_pixels: int = 0  # 0: PIL's Image.MAX_IMAGE_PIXELS (about 89 million)

    @property
    def upload_limit(self) -> int:
        return int(self.max_upload_mb * 2**20)


def create_app(predictor: "Predictor", options: ServeOptions, on_ready: Callable[[], None] | None = None) -> Any:
    """The FastAPI app serving ``predictor``; ``on_ready`` is called once it has started."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from PIL import Image
    from starlette.exceptions import HTTPException

    from vitkit.commands.serve.page import PAGE

    max_pixels = options.max_pixels or int(Image.MAX_IMAGE_PIXELS or 0) or 2**31
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitkit-model")  # one model call at a time
    batcher = Batcher(predictor.probabilities, model_thread, options.max_batch, options.max_wait_ms / 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        if on_ready:
            on_ready()
        try:
            yield
        finally:
            worker.cancel()
            model_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"vitkit serve: {predictor.name}", lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return error(err.status, str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(err).__name__}: {err}")

    async def views(request: Request) -> list["torch.Tensor"]:
        images = await request_images(request, options.upload_limit)
        return await asyncio.gather(*(asyncio.to_thread(read_view, predictor, data, max_pixels) for data in images))

    @app.post("/predict")
    async def predict(request: Request, topk: int = Query(DEFAULT_TOPK, ge=1)) -> JSONResponse:
        rows = await asyncio.gather(*(batcher.submit(view) for view in await views(request)))
        return JSONResponse({"predictions": [answer(predictor, row, topk) for row in rows]})

    @app.post("/attention")
    async def attention(request: Request) -> Response:
        view = (await views(request))[0]
        loop = asyncio.get_running_loop()
        try:  # in the model thread: its hooks must not see another batch's forward pass
            png = await loop.run_in_executor(model_thread, attention_png, predictor, view)
        except UserError as err:  # a model whose attention cannot show its weights
            raise BadRequest(422, str(err)) from None
        return Response(png, media_type="image/png")

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "model": predictor.name,
                "source": predictor.source,
                "classes": len(predictor.classes),
                "device": str(predictor.device),
                "max_batch": options.max_batch,
                "max_wait_ms": options.max_wait_ms,
                "batches": batcher.stats.batches,
                "images": batcher.stats.images,
            }
        )

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


# ------------------------------------------------------------------------------------------ command


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"cannot listen on {host}:{port} ({reason}); choose another --port (0: a free one)") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    target: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    max_upload_mb: float = 20.0,
    device: str = "auto",
    tta: str | None = None,
) -> int:
    """The command: load ``target`` once, listen on ``host:port``, serve until Ctrl-C; ``tta``: average the
    probabilities over test-time augmented views (``evaluation.tta``), as ``vitkit predict --tta``."""
    from vitkit.extras import require

    if max_batch < 1:
        raise UserError(f"--max-batch must be >= 1, got {max_batch}")
    if max_wait_ms < 0:
        raise UserError(f"--max-wait-ms must be >= 0, got {max_wait_ms}")
    if max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb must be > 0, got {max_upload_mb}")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    require("serve", "fastapi", "uvicorn", "multipart", what="vitkit serve")
    import uvicorn

    import vitkit

    sock = bind(host, port)  # first: a port in use is said before the model loads
    url = url_of(sock)
    predictor = vitkit.load(target, device, tta)

    def ready() -> None:
        print(
            f"vitkit serve: {predictor.name} ({len(predictor.classes)} classes, on {predictor.device}) at {url} "
            f"(batches of up to {max_batch}, {max_wait_ms:g} ms wait; Ctrl-C to stop)",
            flush=True,
        )
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"vitkit serve: listening on {host}: reachable from other machines", file=sys.stderr, flush=True)

    app = create_app(predictor, ServeOptions(max_batch, max_wait_ms, max_upload_mb), on_ready=ready)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
