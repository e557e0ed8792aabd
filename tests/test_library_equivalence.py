"""Issue 17 item 19: where vitkit used hand-written code, the library function it now calls is equal.

Each test keeps the replaced hand-written code as the reference and checks vitkit's function (now the
library's) against it on several inputs, and that EMA checkpoints written before the switch still load.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import vitkit
from vitkit.engine.ema import ModelEma
from vitkit.evaluation.report import class_metrics, confusion_matrix
from vitkit.models.weights import adapt_input_channels, resample_pos_embed


class HandWrittenEma:
    """vitkit's EMA before the switch (the reference)."""

    def __init__(self, model, decay):
        self.decay, self.updates = decay, 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.module.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
        for ema_buf, live_buf in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(live_buf)

    def state_dict(self):
        return {"model": self.module.state_dict(), "updates": self.updates, "decay": self.decay}


def _train_steps(model, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.01)
        yield


def test_ema_equals_the_hand_written_one_and_loads_its_checkpoints():
    model = vitkit.create_model("vit_nano_patch4_16", depth=2, num_classes=10, in_chans=1)
    ours, reference = ModelEma(model, 0.99), HandWrittenEma(model, 0.99)
    for _ in _train_steps(model, 30, seed=0):
        ours.update(model)
        reference.update(model)
    for key, value in reference.module.state_dict().items():
        assert torch.equal(ours.module.state_dict()[key], value), key
    assert ours.state_dict().keys() == reference.state_dict().keys() and ours.updates == 30
    assert not any(p.requires_grad for p in ours.module.parameters())
    # a checkpoint written by the hand-written EMA resumes into the new one and continues identically
    resumed = ModelEma(vitkit.create_model("vit_nano_patch4_16", depth=2, num_classes=10, in_chans=1), 0.99)
    resumed.load_state_dict(reference.state_dict())
    for _ in _train_steps(model, 5, seed=1):
        resumed.update(model)
        reference.update(model)
    for key, value in reference.module.state_dict().items():
        assert torch.equal(resumed.module.state_dict()[key], value), key


def hand_written_resample(pos_embed, grid_size, num_prefix_tokens):
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old == grid_size:
        return pos_embed
    image = rearrange(grid.float(), "1 (h w) d -> 1 d h w", h=old)
    image = F.interpolate(image, size=(grid_size, grid_size), mode="bicubic", align_corners=False, antialias=True)
    return torch.cat([prefix, rearrange(image, "1 d h w -> 1 (h w) d").to(pos_embed.dtype)], dim=1)


@pytest.mark.parametrize(("old", "new", "prefix"), [(14, 8, 1), (4, 7, 0), (8, 4, 5), (6, 6, 1)])
def test_pos_embed_resize_equals_the_hand_written_one(old, new, prefix):
    pos = torch.randn(1, prefix + old * old, 24)
    assert torch.equal(resample_pos_embed(pos, new, prefix), hand_written_resample(pos, new, prefix))


def hand_written_adapt(weight, in_chans):
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // weight.shape[1])
    return torch.cat([weight] * repeats, dim=1)[:, :in_chans] * (weight.shape[1] / in_chans)


@pytest.mark.parametrize(("source", "target"), [(3, 1), (3, 4), (3, 8), (1, 3), (3, 3), (4, 2)])
def test_input_channel_adaptation_equals_the_hand_written_one(source, target):
    weight = torch.randn(16, source, 4, 4)
    assert torch.allclose(adapt_input_channels(weight, target), hand_written_adapt(weight, target), atol=1e-6)


def hand_written_class_metrics(predictions, targets, n):
    matrix = torch.bincount(targets * n + predictions, minlength=n * n).reshape(n, n).double()
    hits, predicted, support = matrix.diagonal(), matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp_min(1), torch.zeros_like(hits))
    recall = torch.where(support > 0, hits / support.clamp_min(1), torch.zeros_like(hits))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-12), torch.zeros_like(hits))
    return matrix.long(), precision, recall, f1, support


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_and_confusion_equal_the_hand_written_ones(seed):
    generator = torch.Generator().manual_seed(seed)
    n = 6
    targets = torch.randint(0, n - 1, (200,), generator=generator)  # class 5 never true: support 0
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, targets, torch.randint(0, n, (200,)))
    predictions[predictions == 3] = 2  # class 3 never predicted: precision 0 by convention
    matrix = confusion_matrix(predictions, targets, n)
    names = [f"c{i}" for i in range(n)]
    rows = class_metrics(matrix, names)
    ref_matrix, precision, recall, f1, support = hand_written_class_metrics(predictions, targets, n)
    assert torch.equal(torch.as_tensor(matrix), ref_matrix)
    for i, row in enumerate(rows):
        assert row["class"] == names[i] and row["support"] == int(support[i])
        assert row["precision"] == pytest.approx(float(precision[i]), abs=1e-12)
        assert row["recall"] == pytest.approx(float(recall[i]), abs=1e-12)
        assert row["f1"] == pytest.approx(float(f1[i]), abs=1e-12)
