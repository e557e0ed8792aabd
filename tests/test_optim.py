"""Optimizers and schedulers: no decay on the named groups, layer-wise LR decay, LR curves checked numerically."""

import math

import pytest
import torch

import vitkit
from vitkit import SCHEDULERS
from vitkit.engine import build
from vitkit.recipe import recipe_from_dict

BASE_LR = 0.1


def model():
    return vitkit.create_model(
        "vit_nano_patch4_16",
        num_classes=10,
        in_chans=1,
        depth=3,
        class_token=True,
        global_pool="token",
        pos_embed="learn",
    )


def curve(spec, total=100, steps_per_epoch=10, groups=1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": BASE_LR * 0.5**i} for i in range(groups)]
    optimizer = torch.optim.SGD(params, lr=BASE_LR)
    scheduler = SCHEDULERS.create(spec, optimizer=optimizer, total_steps=total, steps_per_epoch=steps_per_epoch)
    lrs = []
    for _ in range(total):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return torch.tensor(lrs), scheduler


def test_cosine_warmup_then_half_cosine():
    lrs, _ = curve({"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.1})
    lr = lrs[:, 0]
    assert torch.allclose(lr[:10], BASE_LR * torch.arange(1, 11) / 10)  # linear warm-up over 10 updates
    t = (torch.arange(10, 100) - 10) / 90
    assert torch.allclose(lr[10:], BASE_LR * (0.1 + 0.9 * 0.5 * (1 + torch.cos(math.pi * t))), atol=1e-7)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"name": "constant", "warmup_steps": 5}, lambda s: 1.0),
        ({"name": "step", "step_epochs": 3, "gamma": 0.5, "warmup_steps": 5}, lambda s: 0.5 ** (s // 30)),
        (
            {"name": "multistep", "milestones": [2, 7], "gamma": 0.1, "warmup_steps": 5},
            lambda s: 0.1 ** ((s >= 20) + (s >= 70)),
        ),
        ({"name": "polynomial", "power": 2.0, "warmup_steps": 5}, lambda s: (1 - (s - 5) / 95) ** 2),
    ],
)
def test_schedules_after_warmup(spec, expected):
    lrs, _ = curve(spec)
    lr = lrs[:, 0]
    assert torch.allclose(lr[:5], BASE_LR * torch.arange(1, 6) / 5)
    assert torch.allclose(lr[5:], torch.tensor([BASE_LR * expected(s) for s in range(5, 100)]), atol=1e-7)


def test_one_cycle_rises_then_anneals():
    lrs, _ = curve({"name": "one_cycle", "pct_start": 0.3, "div_factor": 10, "final_div_factor": 100})
    lr = lrs[:, 0]
    assert lr[0].item() == pytest.approx(BASE_LR * (0.1 + 0.9 / 30))
    assert lr[29].item() == pytest.approx(BASE_LR) and lr.argmax().item() == 29
    assert (lr[30:].diff() <= 1e-12).all() and lr[-1].item() < BASE_LR * 0.01


def test_plateau_cuts_after_patience_and_keeps_its_state():
    lrs, scheduler = curve({"name": "plateau", "metric": "val_loss", "patience": 1, "factor": 0.5, "warmup_steps": 3})
    assert torch.allclose(lrs[:3, 0], BASE_LR * torch.arange(1, 4) / 3) and lrs[-1, 0] == BASE_LR
    for loss, lr in [(1.0, 1.0), (0.9, 1.0), (0.95, 1.0), (0.95, 0.5), (0.95, 0.5), (0.95, 0.25)]:
        scheduler.on_epoch_end({"val_loss": loss})
        scheduler.step()
        assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(BASE_LR * lr)
    state = scheduler.state_dict()
    torch.save(state, __import__("io").BytesIO())  # saved in checkpoints: must pickle
    with pytest.raises(vitkit.UserError, match="no metric 'val_loss'"):
        scheduler.on_epoch_end({"val_acc": 0.5})


@pytest.mark.parametrize("name", ["cosine", "step", "multistep", "polynomial", "one_cycle", "plateau", "constant"])
def test_every_scheduler_keeps_per_group_lr_ratios(name):
    lrs, _ = curve({"name": name}, groups=3)
    assert torch.allclose(lrs[:, 1] / lrs[:, 0], torch.full((100,), 0.5))
    assert torch.allclose(lrs[:, 2] / lrs[:, 0], torch.full((100,), 0.25))


def test_layer_decay_scales_each_block_and_survives_the_scheduler():
    recipe = recipe_from_dict(
        {"optimizer": {"name": "adamw", "lr": 1e-3, "layer_decay": 0.5}, "scheduler": {"name": "cosine"}}
    )
    m = model()
    optimizer = build.build_optimizer(recipe, m)
    scheduler = build.build_scheduler(recipe, optimizer, 10, 5)
    names = {id(p): n for n, p in m.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of["head.weight"] == pytest.approx(1e-3)
    assert lr_of["blocks.2.attn.qkv.weight"] == pytest.approx(0.5e-3)
    assert lr_of["blocks.0.attn.qkv.weight"] == pytest.approx(0.125e-3)
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(0.0625e-3)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    lrs = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs["blocks.0.attn.qkv.weight"] / lrs["head.weight"] == pytest.approx(0.125)
    assert lrs["head.weight"] < 1e-3  # the schedule did move


@pytest.mark.parametrize("name", ["adamw", "sgd", "lamb", "lion", "adan"])
def test_no_weight_decay_on_biases_norms_tokens_positions(name):
    recipe = recipe_from_dict({"optimizer": {"name": name, "lr": 1e-3, "weight_decay": 0.1, "layer_decay": 0.8}})
    m = model()
    optimizer = build.build_optimizer(recipe, m)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay) == len(names)
    for key in ("cls_token", "pos_embed", "norm.weight", "norm.bias", "head.bias", "blocks.0.norm1.weight"):
        assert decay[key] == 0.0, key
    assert decay["blocks.0.attn.qkv.weight"] == 0.1 and decay["head.weight"] == 0.1
    assert optimizer.defaults.get("nesterov", True)  # sgd uses Nesterov momentum by default


def test_timm_optimizer_by_name_and_unknown_one():
    m = model()
    opt = build.build_optimizer(recipe_from_dict({"optimizer": {"name": "timm", "opt": "lamb", "lr": 1e-3}}), m)
    assert type(opt).__name__ == "Lamb"
    with pytest.raises(vitkit.UserError, match="did you mean 'lamb'"):
        build.build_optimizer(recipe_from_dict({"optimizer": {"name": "timm", "opt": "lambb"}}), m)
