"""Issue #27: gradient checkpointing, patch dropout, CPU peak memory in ``vitkit bench``, compile when it pays."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from torch import nn

from vitkit import create_model
from vitkit.layers import BlockStack
from vitkit.layers.pos_embed import Rope2d
from vitkit.registry import ATTENTION, MODELS


class PlainAttention(nn.Module):
    """A plugin's attention on the plain contract (not vitkit's base class)."""

    def __init__(self, dim: int, num_heads: int = 8, **kwargs: object) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        out = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) @ v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


def _grads(model: nn.Module, images: torch.Tensor, checkpointing: bool) -> dict[str, torch.Tensor]:
    model.set_grad_checkpointing(checkpointing)
    model.zero_grad(set_to_none=True)
    model.train()
    torch.manual_seed(1)  # the same dropout / drop-path / patch-dropout draws in both runs
    outputs = model(images)
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    logits.square().sum().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(model: nn.Module, images: torch.Tensor) -> None:
    plain = _grads(model, images, checkpointing=False)
    recomputed = _grads(model, images, checkpointing=True)
    assert plain.keys() == recomputed.keys() and len(plain) > 4
    for name, grad in plain.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def _nano_models() -> list[str]:
    return [name for name in MODELS.list("*nano*") if MODELS.get(name).origin == "vitkit"]


@pytest.mark.parametrize("name", _nano_models())
def test_i27_1_checkpointing_same_gradients_every_model_family(name):
    torch.manual_seed(0)
    model = create_model(name)
    stacks = [m for m in model.modules() if isinstance(m, BlockStack)]
    assert stacks, f"{name} runs its blocks outside the shared BlockStack"
    model.set_grad_checkpointing(True)
    assert all(stack.grad_checkpointing for stack in stacks)
    _assert_same_grads(model, torch.randn(3, model.in_chans, model.img_size, model.img_size))


def test_i27_1_checkpointing_recomputes_in_backward():
    """Checkpointed, each block runs twice per step (forward, then again in backward); in eval, once."""
    model = create_model("vit_nano_patch4_16", depth=2)
    calls, mlp = [], model.blocks[0].mlp.forward

    def counted(x: torch.Tensor) -> torch.Tensor:  # module hooks do not fire in the recompute
        calls.append(1)
        return mlp(x)

    model.blocks[0].mlp.forward = counted
    model.set_grad_checkpointing(True)
    model(torch.randn(2, 1, 16, 16)).sum().backward()
    assert len(calls) == 2
    with torch.no_grad():
        model(torch.randn(2, 1, 16, 16))
    assert len(calls) == 3


@pytest.mark.parametrize("attention", [*ATTENTION.list(), PlainAttention])
def test_i27_1_checkpointing_same_gradients_every_attention(attention):
    torch.manual_seed(0)
    model = create_model(
        "vit_nano_patch4_16", depth=2, attention=attention, drop_rate=0.1, drop_path_rate=0.2, reg_tokens=1
    )
    _assert_same_grads(model, torch.randn(3, 1, 16, 16))


@pytest.mark.parametrize("pos_embed", ["learn", "sincos", "rope2d"])
def test_i27_1_checkpointing_same_gradients_with_patch_dropout(pos_embed):
    """Recompute in backward sees the same kept patches (rope reads them at recompute time)."""
    torch.manual_seed(0)
    model = create_model("vit_nano_patch4_16", depth=2, pos_embed=pos_embed, patch_drop_rate=0.5)
    _assert_same_grads(model, torch.randn(3, 1, 16, 16))


def _block_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = model.blocks[0].register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("name, options", [
    ("vit_nano_patch4_16", {"reg_tokens": 2}),  # learned positions over class + register tokens
    ("vit_nano_patch4_16", {"reg_tokens": 1, "no_embed_class": True}),
    ("simple_vit_nano_patch4_16", {}),  # sin-cos, no prefix tokens
    ("vit_nano_patch4_16", {"pos_embed": "rope2d", "reg_tokens": 1}),
    ("cait_nano_patch4_16", {}),
    ("cct_nano_patch4_16", {}),
])  # fmt: skip
def test_i27_2_patch_dropout_keeps_special_tokens_and_positions(name, options):
    torch.manual_seed(0)
    model = create_model(name, patch_drop_rate=0.5, **options)
    images = torch.randn(4, model.in_chans, model.img_size, model.img_size)
    prefix = getattr(model, "num_prefix_tokens", 0)
    model.eval()
    full = _block_input(model, images)
    patches = full.shape[1] - prefix
    assert patches == 16
    model.train()
    kept_tokens = _block_input(model, images)
    assert kept_tokens.shape == (4, prefix + 8, full.shape[-1])  # half the 16 patches, every special token
    torch.testing.assert_close(kept_tokens[:, :prefix], full[:, :prefix])
    # each kept token is one of its own image's full tokens, position included, each at most once
    for b in range(4):
        distances = torch.cdist(kept_tokens[b, prefix:], full[b, prefix:])
        assert distances.min(dim=1).values.max() < 1e-5
        assert distances.argmin(dim=1).unique().numel() == 8
    assert not torch.equal(kept_tokens[0, prefix:], kept_tokens[1, prefix:]), "the same patches for every image"


def test_i27_2_patch_dropout_rope_rotates_kept_tokens_by_their_own_positions():
    rope = Rope2d(head_dim=8, grid_size=4, num_prefix_tokens=1)
    q = torch.randn(2, 3, 1 + 16, 8)
    full = rope.rotate(q)
    kept = torch.tensor([[0, 5, 6, 15], [1, 2, 9, 12]])
    gathered = torch.cat([q[:, :, :1], torch.stack([q[b, :, 1:][:, kept[b]] for b in range(2)])], dim=2)
    rope.kept = kept
    rotated = rope.rotate(gathered)
    expected = torch.cat([full[:, :, :1], torch.stack([full[b, :, 1:][:, kept[b]] for b in range(2)])], dim=2)
    torch.testing.assert_close(rotated, expected)


def test_i27_2_patch_dropout_rope_model_uses_kept_positions():
    """A rope model in training tells its rotary module which patches were kept; in eval, none dropped."""
    torch.manual_seed(0)
    model = create_model("vit_nano_patch4_16", depth=1, pos_embed="rope2d", patch_drop_rate=0.25)
    rope = model.blocks[0].attn.rope
    model.train()
    model(torch.randn(2, 1, 16, 16))
    assert rope.kept is not None and rope.kept.shape == (2, 12)
    model.eval()
    model(torch.randn(2, 1, 16, 16))
    assert rope.kept is None


def test_i27_2_patch_drop_rate_user_errors():
    with pytest.raises(ValueError, match="patch_drop_rate"):
        create_model("vit_nano_patch4_16", patch_drop_rate=1.0)


def _tiny(tmp_path, **sections):
    from vitkit.recipe import recipe_from_dict

    data = {
        "name": "tiny",
        "model": {"name": "vit_nano_patch4_16", "depth": 2, "drop_path_rate": 0.1},
        "data": {"dataset": "digits", "batch_size": 64},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "scheduler": {"name": "constant"},
        "train": {"epochs": 1},
        "output": {"dir": str(tmp_path), "plots": False},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return recipe_from_dict(data)


def _one_epoch(trainer):
    from vitkit.engine.console import EpochProgress

    with EpochProgress(1, len(trainer.train_loader)) as progress:
        progress.start_epoch(1, 0.0)
        return trainer.train_epoch(1, progress)


def test_i27_1_train_grad_checkpointing_trains_the_same_weights(tmp_path):
    from vitkit.engine.trainer import Trainer

    states = []
    for checkpointing in (False, True):
        trainer = Trainer(_tiny(tmp_path, train={"grad_checkpointing": checkpointing}))
        assert trainer.model.blocks.grad_checkpointing is checkpointing
        _one_epoch(trainer)
        states.append(trainer.model.state_dict())
    for key, value in states[0].items():
        torch.testing.assert_close(states[1][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_i27_1_grad_checkpointing_user_errors(tmp_path):
    from vitkit.errors import UserError
    from vitkit.recipe import recipe_from_dict

    with pytest.raises(UserError, match="train.grad_checkpointing: expected true or false"):
        recipe_from_dict({"name": "x", "model": {"name": "vit_nano_patch4_16"}, "train": {"grad_checkpointing": 1}})
    with pytest.raises(UserError, match='train.compile: expected true, false or "auto"'):
        recipe_from_dict({"name": "x", "model": {"name": "vit_nano_patch4_16"}, "train": {"compile": "yes"}})


@pytest.mark.slow
@pytest.mark.parametrize("figures, choice", [("10,5,0.01", "compiled"), ("10,9.9,1000", "eager")])
def test_i27_4_compile_auto_decides_both_ways(tmp_path, monkeypatch, capsys, figures, choice):
    """Figures from the test hook (not timing): 5 ms saved x 12 steps > 0.01 s; 0.1 ms x 12 < 1000 s."""
    from vitkit.engine.trainer import Trainer

    monkeypatch.setenv("VITKIT_TEST_COMPILE_FIGURES", figures)
    trainer = Trainer(_tiny(tmp_path, train={"compile": "auto"}))
    summary = trainer.fit()
    decision = summary["compile_auto"]
    assert decision["choice"] == choice
    assert decision["eager_ms"] == 10.0 and decision["compile_s"] == float(figures.split(",")[2])
    steps = len(trainer.train_loader)
    assert steps == 20 and decision["remaining_steps"] == steps - 8  # 4 eager (1 warm-up), 1 compiling, 3 compiled
    assert decision["saving_s"] == pytest.approx((10.0 - float(figures.split(",")[1])) / 1e3 * 12)
    compiled = trainer.compile_trial.compiled
    assert trainer.forward is (compiled if choice == "compiled" else trainer.wrapped)
    out = capsys.readouterr().out
    assert f"train.compile auto: {choice}: eager 10.0 ms/step" in out


def test_i27_4_compile_auto_times_its_compiled_steps_through_the_compiled_model(tmp_path, monkeypatch):
    """The steps the trial times as compiled run through what ``torch.compile`` returned, not the eager model
    (they did not: the trial compared eager with eager and measured 0 s of compiling)."""
    import torch

    from vitkit.engine.trainer import Trainer

    calls = []

    class Counting(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            return self.model(x)

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: Counting(model))
    monkeypatch.setenv("VITKIT_TEST_COMPILE_FIGURES", "10,9.9,1000")  # the trial ends choosing eager
    trainer = Trainer(_tiny(tmp_path, train={"compile": "auto"}))
    trainer.fit()
    assert trainer.compile_trial.decision["choice"] == "eager"
    assert len(calls) == 4  # the compiling step and 3 timed compiled steps; eager again after the decision


def test_i27_4_compile_auto_too_few_steps_stays_eager(tmp_path, capsys):
    from vitkit.engine.trainer import Trainer

    trainer = Trainer(_tiny(tmp_path, train={"compile": "auto"}, data={"batch_size": 256}))
    trainer.fit()  # 5 steps
    assert trainer.compile_trial.decision["choice"] == "eager" and trainer.compile_trial.compiled is None
    assert "train.compile auto: eager (5 steps: too few to measure)" in capsys.readouterr().out


@pytest.mark.parametrize("native, name, expected", [
    (True, "vit_tiny_patch16_224", "bf16"),  # 2.5 GFLOPs/img: bf16 pays
    (True, "vit_nano_patch4_16", "fp32"),  # digits: the casts cost more than bf16 saves
    (False, "vit_tiny_patch16_224", "fp32"),
])  # fmt: skip
def test_i27_5_cpu_auto_precision_from_work_per_image(monkeypatch, native, name, expected):
    from vitkit.engine import device
    from vitkit.engine.efficiency import cpu_auto_precision

    monkeypatch.setattr(device, "cpu_native_bf16", lambda: native)
    model = create_model(name)
    precision, line = cpu_auto_precision(model, model.in_chans, model.img_size)
    assert precision == expected
    assert line.startswith(f"precision auto: {expected} (")
    assert ("GFLOPs/img" in line) is native


BENCH_RECIPE = """
name = "mem"
[model]
name = "vit_tiny_patch4_32"
depth = 3
[data]
dataset = "digits"
batch_size = 32
"""


@pytest.mark.slow
def test_i27_6_bench_reports_cpu_peak_memory_and_checkpointing_lowers_it(cli, write_recipe):
    import json

    recipe = write_recipe(BENCH_RECIPE)
    code, out, err = cli(
        "bench", recipe, "--train", "--grad-checkpointing", "--patch-drop", "0.5",
        "--steps", "1", "--repeats", "1", "--warmup", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    memory = {row["model"]: row["peak_mem_mb"] for row in result["rows"]}
    assert set(memory) == {"vitkit", "vitkit ckpt", "vitkit pdrop 0.5"}
    assert memory["vitkit"] > 20  # MiB: 3 blocks' activations of 32 x 65 tokens x 192
    assert memory["vitkit ckpt"] < 0.7 * memory["vitkit"]
    assert memory["vitkit pdrop 0.5"] < 0.8 * memory["vitkit"]
    ratios = result["vs_base"]["train"]
    assert ratios["vitkit ckpt"]["memory"] == pytest.approx(memory["vitkit ckpt"] / memory["vitkit"])
