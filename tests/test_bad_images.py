"""Bad files in an imagefolder: skipped with a warning naming each (counted in summary.json), or an error
before training with ``data.on_bad_image = "error"``; empty or mismatched class folders are clear errors."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from PIL import Image

from vitkit.data.datasets import Digits
from vitkit.data.imagecheck import find_bad_images

RECIPE = """
name = "folder"
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = {{ name = "imagefolder", in_chans = 1 }}
root = "{root}"
batch_size = 16
[train]
epochs = 1
[output]
dir = "{out}"
"""


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image[0].numpy() * 255).astype("uint8")).resize((32, 32)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image[0].numpy() * 255).astype("uint8")).resize((64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    """train/ and val/ with classes 0, 1, 2 of real digits as PNGs (20 and 6 per class)."""
    root = tmp_path_factory.mktemp("folder") / "digits"
    data = Digits(img_size=8).load()
    for split, images, labels, per_class in (("train", data.train.images, data.train.labels, 20),
                                             ("val", data.val.images, data.val.labels, 6)):  # fmt: skip
        for cls in range(3):
            folder = root / split / str(cls)
            folder.mkdir(parents=True)
            for i, index in enumerate((labels == cls).nonzero().flatten()[:per_class]):
                (folder / f"{i}.png").write_bytes(_png(images[index]))
    return root


BAD_FILES = {  # path -> content; five kinds of bad file
    "train/0/random_bytes.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "train/1/notes.jpg": b"these are my notes, not a picture\n",
    "train/2/empty.png": b"",
    "val/0/truncated.png": None,  # first half of a real PNG
    "train/1/truncated.jpg": None,  # first half of a real JPEG: PIL's verify() does not see this one
}


@pytest.fixture
def bad_folder(good_folder, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(good_folder, root)
    png = (root / "val/0/0.png").read_bytes()
    jpeg = _jpeg(Digits(img_size=8).load().train.images[0])
    for name, content in BAD_FILES.items():
        if content is None:
            content = (png if name.endswith(".png") else jpeg)[: len(png if name.endswith(".png") else jpeg) // 2]
        (root / name).write_bytes(content)
    return root


def _write(tmp_path, root):
    path = tmp_path / "folder.toml"
    path.write_text(RECIPE.format(root=root, out=tmp_path / "runs"))
    return path


def test_prescan_finds_every_bad_file(bad_folder):
    files = sorted(p for p in bad_folder.rglob("*") if p.is_file())
    bad = find_bad_images(files, workers=2)
    assert {str(p.relative_to(bad_folder)) for p in bad} == set(BAD_FILES)
    assert len(files) - len(bad) == 3 * 20 + 3 * 6


def test_bad_images_are_skipped_named_and_counted(cli, bad_folder, tmp_path):
    code, out, err = cli("run", _write(tmp_path, bad_folder))
    assert code == 0, err
    flat = out.replace("\n", "")
    for name in BAD_FILES:
        assert f"skipping bad image {bad_folder / name}" in flat
    (run_dir,) = (tmp_path / "runs" / "folder").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["bad_images"] == len(BAD_FILES) == 5


def test_on_bad_image_error_fails_before_training(cli, bad_folder, tmp_path):
    path = _write(tmp_path, bad_folder)
    path.write_text(path.read_text().replace("batch_size = 16", 'batch_size = 16\non_bad_image = "error"'))
    code, _, err = cli("run", path)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"imagefolder: {bad_folder / 'train/0/random_bytes.png'} is not a readable image" in err
    assert '(and 3 more in train/); remove it, or set data.on_bad_image = "skip"' in err
    assert not (tmp_path / "runs").exists()  # failed before a run directory was made


def test_empty_and_unreadable_class_folders_and_mismatched_classes(cli, good_folder, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(good_folder, root)
    (root / "train" / "3").mkdir()
    (root / "val" / "3").mkdir()
    code, _, err = cli("run", _write(tmp_path, root))
    assert code == 2 and f"imagefolder: class folder {root / 'train' / '3'} has no images" in err
    (root / "train" / "3" / "bad.png").write_bytes(b"nope")
    code, _, err = cli("run", _write(tmp_path, root))
    assert code == 2 and f"class folder {root / 'train' / '3'} has no readable images" in err
    shutil.rmtree(root / "val" / "3")
    shutil.rmtree(root / "train" / "3")
    (root / "val" / "9").mkdir()
    code, _, err = cli("run", _write(tmp_path, root))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert f"class folders of {root / 'val'} differ from train/: ['0', '1', '2', '9'] vs ['0', '1', '2']" in err
