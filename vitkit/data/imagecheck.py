"""A pre-scan of image files: every file is decoded once at load, so no bad file can stop a run mid-epoch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path


def image_problem(path: Path, quick: bool = False) -> str | None:
    """Why ``path`` cannot be used as an image (not an image, corrupt, truncated), or ``None``. ``quick``: a
    JPEG is decoded at 1/8 scale (every byte still read, so truncation still shows; several times faster)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if quick:
                img.draft(img.mode, (1, 1))  # JPEG only: the decoder's smallest DCT scale; others ignore it
            img.load()  # a full decode: ``verify()`` alone misses truncated JPEGs
        return None
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for corrupt and truncated files
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    except Image.DecompressionBombError as err:
        return str(err).splitlines()[0]


def find_bad_images(files: list[Path], workers: int = 0, quick: bool = False) -> dict[Path, str]:
    """``{path: reason}`` for the files that do not decode, in order; decoded on threads (PIL frees the GIL);
    ``quick``: see ``image_problem``."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(partial(image_problem, quick=quick), files, chunksize=64))
    return {path: why for path, why in zip(files, problems, strict=True) if why is not None}


def warn_bad_images(bad: dict[Path, str], show: int = 10) -> None:
    """One warning line per skipped file (the first ``show``), then a count."""
    from vitkit.engine.console import console

    for path, why in list(bad.items())[:show]:
        console.print(f"[yellow]warning:[/] skipping bad image {path} ({why})", soft_wrap=True)
    if len(bad) > show:
        console.print(f"[yellow]warning:[/] ... and {len(bad) - show} more bad images skipped", soft_wrap=True)
