"""Test helper: generated JPEG folders (``benchmarks/make_photo_folder.py``) and a tiny imagefolder recipe."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .conftest import ROOT

_spec = importlib.util.spec_from_file_location("make_photo_folder", ROOT / "benchmarks" / "make_photo_folder.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
make_photo_folder = _module.make_photo_folder
draw_photo = _module.draw_photo

FOLDER_RECIPE = """
name = "photos"
seed = 1
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "imagefolder"
root = "ROOT"
batch_size = 8
[train]
epochs = 1
[output]
dir = "OUT"
"""


def folder_recipe(tmp_path: Path, root: Path, extra: str = "", name: str = "recipe.toml") -> Path:
    """A tiny imagefolder recipe on ``root`` writing runs under ``tmp_path/runs``; ``extra`` is appended."""
    path = tmp_path / name
    text = FOLDER_RECIPE.replace("ROOT", root.as_posix()).replace("OUT", (tmp_path / "runs").as_posix())
    path.write_text(text + extra)
    return path


def tiny_folder(root: Path, layout: str = "flat", per_class: int = 10, **kwargs) -> Path:
    """3 classes of small JPEGs (20-48 px, varied aspect ratios)."""
    return make_photo_folder(root, layout, classes=3, per_class=per_class, min_size=20, max_size=48, **kwargs)
