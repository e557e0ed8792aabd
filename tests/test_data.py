import pytest
import torch

from vitkit.data import BatchTransform
from vitkit.data.augment import HorizontalFlip, RandomCrop, Translate
from vitkit.data.datasets import Digits
from vitkit.data.loaders import InMemoryLoader


def test_digits_splits_are_fixed_stratified_and_disjoint():
    a, b = Digits(img_size=8).load(), Digits(img_size=8).load()
    assert (len(a.train), len(a.val), len(a.test)) == (1295, 143, 359)
    assert torch.equal(a.test.labels, b.test.labels) and torch.equal(a.test.images, b.test.images)
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of each class
    flat = {tuple(x.flatten().tolist()) for x in a.test.images}
    overlap = sum(tuple(x.flatten().tolist()) in flat for x in a.train.images)
    assert overlap < 5  # a few digits are duplicated in the raw data
    assert a.train.images.min() >= 0 and a.train.images.max() <= 1


def test_translate_shifts_content_and_keeps_labels():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 3] = 1.0
    y = torch.arange(64)
    out, labels = Translate(pixels=1)(x, y)
    assert torch.equal(labels, y)
    assert out.shape == x.shape and torch.all(out.sum(dim=(1, 2, 3)) == 1)  # the dot is moved, not lost
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert set(rows.tolist()) == {2, 3, 4} and set(cols.tolist()) == {2, 3, 4}


def test_random_crop_and_flip():
    x = torch.rand(16, 3, 8, 8)
    out, _ = RandomCrop(padding=2)(x, torch.zeros(16))
    assert out.shape == x.shape and not torch.equal(out, x)
    flipped, _ = HorizontalFlip(p=1.0)(x, torch.zeros(16))
    assert torch.equal(flipped, x.flip(-1))
    kept, _ = HorizontalFlip(p=0.0)(x, torch.zeros(16))
    assert torch.equal(kept, x)
    with pytest.raises(ValueError):
        HorizontalFlip(p=2)


def test_batch_transform_resizes_and_normalises():
    tf = BatchTransform(16, mean=(0.5,), std=(0.25,))
    x = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    out, _ = tf(x, torch.zeros(2))
    assert out.shape == (2, 1, 16, 16)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))


def test_in_memory_loader_covers_epoch_and_reshuffles():
    data = Digits(img_size=8).load().train
    tf = BatchTransform(8, (0.0,), (1.0,))
    loader = InMemoryLoader(data, 100, tf, torch.device("cpu"), train=True, seed=0)
    assert len(loader) == len(data) // 100
    first = torch.cat([y for _, y in loader])
    assert len(first) == 1200  # 12 full batches of 100
    loader.set_epoch(1)
    second = torch.cat([y for _, y in loader])
    assert not torch.equal(first, second)
    loader.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in loader]), first)  # same epoch, same order
    evaluation = InMemoryLoader(data, 100, tf, torch.device("cpu"), train=False)
    assert torch.equal(torch.cat([y for _, y in evaluation]), data.labels)
