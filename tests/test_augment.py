"""Augmentations: each changes images the way it says, keeps labels consistent; mixup targets sum to one."""

import pytest
import torch

from vitkit import AUGMENTATIONS
from vitkit.data import BatchTransform
from vitkit.engine import build
from vitkit.recipe import recipe_from_dict


def batch(n=8, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g), torch.arange(n) % 4


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "randaugment", "num_ops": 2, "magnitude": 15},
        {"name": "trivialaugment"},
        {"name": "autoaugment", "policy": "cifar10"},
        {"name": "color_jitter", "brightness": 0.5, "contrast": 0.5},
        {"name": "random_erasing", "p": 1.0},
        {"name": "random_resized_crop", "img_size": 16, "scale": [0.2, 0.5]},
    ],
)
def test_sample_augmentations_change_each_image_on_its_own(spec):
    torch.manual_seed(0)
    images, labels = batch()
    augment = AUGMENTATIONS.create(spec)
    out, out_labels = augment(images.clone(), labels)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out_labels, labels)
    changed = (out - images).flatten(1).abs().amax(dim=1) > 1e-6
    assert changed.sum() >= 6  # almost every image changed (an op can be a no-op now and then)
    # per sample: copies of one image come out different (each draws its own parameters)
    same = images[:1].repeat(8, 1, 1, 1)
    out_same, _ = augment(same.clone(), labels)
    assert len({tuple(img.flatten().tolist()) for img in out_same}) >= 3
    # the single-image path (DataLoader workers) works on uint8 images
    one = augment.one((images[0] * 255).to(torch.uint8))
    assert one.dtype == torch.uint8 and one.shape == images[0].shape


def test_random_erasing_blacks_out_a_rectangle():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 16, 16) + 0.1  # no zero pixels before
    out, _ = AUGMENTATIONS.create({"name": "random_erasing", "p": 1.0})(images, torch.zeros(4))
    for img in out:
        rows, cols = (img[0] == 0).nonzero(as_tuple=True)
        assert len(rows) > 0
        box = img[0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box == 0).all()  # the zeros form one filled rectangle


def test_batched_crop_flip_translate_keep_pixels_and_labels():
    torch.manual_seed(0)
    images, labels = batch(c=1)
    flipped, out_labels = AUGMENTATIONS.create({"name": "hflip", "p": 1.0})(images, labels)
    assert torch.equal(flipped, images.flip(-1)) and torch.equal(out_labels, labels)
    shifted, _ = AUGMENTATIONS.create({"name": "translate", "pixels": 1})(images, labels)
    for a, b in zip(images, shifted, strict=True):  # each output is the input moved by at most one pixel
        assert any(
            torch.equal(torch.roll(a, (dy, dx), (-2, -1))[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        )
    cropped, _ = AUGMENTATIONS.create({"name": "random_crop", "padding": 4})(images, labels)
    assert cropped.shape == images.shape and not torch.equal(cropped, images)


def test_mixup_cutmix_targets_sum_to_one_and_follow_the_images():
    import numpy as np

    np.random.seed(0)
    images, labels = batch(n=8)
    mix = AUGMENTATIONS.create({"name": "mixup", "alpha": 0.8, "num_classes": 4, "label_smoothing": 0.1})
    out, targets = mix(images.clone(), labels)
    assert targets.shape == (8, 4)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    # timm pairs image i with image n-1-i: out = lam * x_i + (1 - lam) * x_flip
    lam = ((out[0] - images[7]) / (images[0] - images[7])).median()
    assert torch.allclose(out, lam * images + (1 - lam) * images.flip(0), atol=1e-5)
    # the target weights follow lam (plus smoothing 0.1 spread over 4 classes)
    expected = lam * 0.9 + 0.025 + (labels[0] == labels[7]) * (1 - lam) * 0.9
    assert targets[0, labels[0]] == pytest.approx(float(expected), abs=1e-5)

    cut = AUGMENTATIONS.create({"name": "cutmix", "alpha": 1.0, "num_classes": 4})
    out, targets = cut(images.clone(), labels)
    assert torch.allclose(targets.sum(dim=1), torch.ones(8))
    from_self = (out == images).float().mean()
    from_pair = (out == images.flip(0)).float().mean()
    assert from_self + from_pair == pytest.approx(1.0) and 0 < from_pair < 1  # a pasted box


def test_mixing_switches_off_at_off_epoch():
    images, labels = batch(n=8)
    mix = AUGMENTATIONS.create({"name": "mixup_cutmix", "num_classes": 4, "off_epoch": 3})
    mix.set_epoch(2)
    assert not torch.equal(mix(images.clone(), labels)[0], images)
    mix.set_epoch(3)
    out, targets = mix(images.clone(), labels)
    assert torch.equal(out, images) and torch.equal(targets.argmax(dim=1), labels)


def test_augment_keys_build_mixup_and_batch_transform_passes_the_epoch():
    recipe = recipe_from_dict(
        {
            "augment": {"train": ["hflip"], "mixup": 0.8, "cutmix": 1.0, "mix_off_epoch": 2},
            "loss": {"name": "cross_entropy", "label_smoothing": 0.1},
        }
    )
    augments = build.build_augments(recipe, num_classes=10, img_size=16)
    assert [type(a).__name__ for a in augments] == ["HorizontalFlip", "MixupCutmix"]
    assert augments[1].mixup.label_smoothing == 0.1
    transform = BatchTransform(16, (0.5,), (0.5,), augments)
    transform.set_epoch(2)
    _, targets = transform(torch.rand(4, 1, 16, 16), torch.tensor([1, 2, 3, 4]), train=True)
    assert targets.shape == (4, 10) and torch.equal(targets.argmax(1), torch.tensor([1, 2, 3, 4]))
    assert targets.max().item() == pytest.approx(0.91)  # smoothed one-hot: mixing is off


def test_file_backed_data_runs_sample_augments_in_the_workers(tmp_path):
    from PIL import Image

    from vitkit.data.datasets import ImageFiles, ImageSet
    from vitkit.data.loaders import build_loader

    path = tmp_path / "a.png"
    Image.fromarray((torch.rand(12, 12) * 255).to(torch.uint8).numpy()).save(path)
    files = ImageFiles([(path, 0)] * 4, 12, 1)
    erase = AUGMENTATIONS.create({"name": "random_erasing", "p": 1.0})
    transform = BatchTransform(12, (0.0,), (1.0,), [erase, AUGMENTATIONS.create("hflip")])
    # the default 2 workers: erasing runs in them, not in the main process
    loader = build_loader(ImageSet(files=files), 4, transform, torch.device("cpu"), True)
    assert files.augment == [erase] and len(transform.augments) == 1  # erasing moved to the dataset
    images, _ = next(iter(loader))
    assert ((images == 0).flatten(1).sum(1) > 0).all()
