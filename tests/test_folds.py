"""K-fold cross-validation (``data.fold = "k/K"``): folds disjoint, stratified, fixed; test untouched."""

import pytest
import torch

from vitkit.data.fold_splits import apply_fold
from vitkit.data.folds import stratified_folds
from vitkit.engine import build
from vitkit.recipe import load_recipe

from .conftest import TINY_DIGITS


def _load(write_recipe, fold: str):
    recipe = load_recipe(write_recipe(TINY_DIGITS), [f'data.fold="{fold}"'] if fold else [])
    return build.load_dataset(recipe, 8)


def _rows(images: torch.Tensor) -> list[bytes]:
    return [bytes(img.flatten().numpy().tobytes()) for img in images]


def test_digits_folds_are_disjoint_stratified_and_leave_test_alone(write_recipe):
    plain = _load(write_recipe, "")
    pool = _rows(torch.cat([plain.train.images, plain.val.images]))
    pool_labels = torch.cat([plain.train.labels, plain.val.labels])
    class_counts = torch.bincount(pool_labels, minlength=10)
    seen: list[bytes] = []
    for k in range(1, 6):
        fold = _load(write_recipe, f"{k}/5")
        assert torch.equal(fold.test.images, plain.test.images)  # the test split is untouched
        assert torch.equal(fold.test.labels, plain.test.labels)
        val, train = _rows(fold.val.images), _rows(fold.train.images)
        assert len(val) + len(train) == len(pool)
        assert not set(val) & set(train)  # no image both trains and validates
        assert not set(val + train) & set(_rows(plain.test.images))  # nor leaks from test
        counts = torch.bincount(fold.val.labels, minlength=10)
        assert ((counts - class_counts / 5).abs() <= 1).all()  # every class ~1/5 in every fold
        seen += val
    assert sorted(seen) == sorted(pool)  # the K validation folds cover the pool exactly once
    again = _load(write_recipe, "2/5")
    assert torch.equal(again.val.images, _load(write_recipe, "2/5").val.images)  # fixed folds


def test_stratified_folds_cover_every_index_once():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    parts = stratified_folds(labels, 3)
    assert sorted(torch.cat(parts).tolist()) == list(range(15))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    for part in parts:
        assert set(labels[part].tolist()) == {0, 1, 2}  # every class in every fold


def _image_folder(root, splits=("train", "val", "test")):
    from PIL import Image

    for split in splits:
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(6 if split == "train" else 2):
                Image.new("L", (8, 8), color=40 * c + 10 * i).save(folder / f"{i}.png")
    return root


def test_image_folder_folds(tmp_path, write_recipe):
    root = _image_folder(tmp_path / "imgs")
    text = TINY_DIGITS.replace(
        'dataset = "digits"', f'dataset = {{ name = "imagefolder", in_chans = 1 }}\nroot = "{root}"\ncache = "off"'
    )
    recipe = load_recipe(write_recipe(text), ['data.fold="1/4"'])
    plain = build.load_dataset(load_recipe(write_recipe(text)), 8)
    fold = build.load_dataset(recipe, 8)
    assert fold.test.files.samples == plain.test.files.samples
    val, train = set(fold.val.files.samples), set(fold.train.files.samples)
    assert not val & train and val | train == set(plain.train.files.samples) | set(plain.val.files.samples)
    assert sorted(label for _, label in fold.val.files.samples) == [0, 0, 1, 1]
    assert fold.val.files is not fold.train.files and fold.train.files.augment is not fold.val.files.augment


def test_image_folder_folds_from_the_decoded_cache(tmp_path, write_recipe):
    from vitkit.data.cache import CachedImages

    root = _image_folder(tmp_path / "imgs")
    text = TINY_DIGITS.replace(
        'dataset = "digits"', f'dataset = {{ name = "imagefolder", in_chans = 1 }}\nroot = "{root}"\ncache = "memory"'
    )
    plain = build.load_dataset(load_recipe(write_recipe(text)), 8)
    fold = build.load_dataset(load_recipe(write_recipe(text), ['data.fold="1/4"']), 8)
    assert isinstance(fold.val.images, CachedImages) and fold.val.images.store is fold.train.images.store  # no copy
    val, train = set(fold.val.images.rows.tolist()), set(fold.train.images.rows.tolist())
    pooled = set(plain.train.images.rows.tolist()) | set(plain.val.images.rows.tolist())
    assert not val & train and val | train == pooled
    assert torch.equal(fold.test.images.rows, plain.test.images.rows)  # the test split untouched


def test_folds_refuse_a_test_split_that_is_the_val_split():
    from vitkit.data.datasets import DataSplits, ImageSet
    from vitkit.errors import UserError

    val = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]))
    train = ImageSet(torch.ones(8, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1] * 4))
    splits = DataSplits(train, val, val, ["a", "b"], 1, (0.5,), (0.5,))  # a dataset that scores on val
    with pytest.raises(UserError, match="folds need a separate test split"):
        apply_fold(splits, "1/2")


@pytest.mark.parametrize("fold", ["0/5", "6/5", "1/1", "one of five"])
def test_bad_fold_is_a_user_error(cli, write_recipe, fold):
    code, _, err = cli("run", write_recipe(TINY_DIGITS), "--dry-run", "--set", f'data.fold="{fold}"')
    assert code == 2 and "data.fold" in err and "Traceback" not in err
