"""Architecture variants: each family builds, has the right shapes, and trains an epoch on digits."""

import json
import math

import pytest
import torch
from torch import nn

import vitkit
from vitkit.layers import Block
from vitkit.recipe import recipe_from_dict

FAMILIES = {
    "vit_layerscale_qknorm_registers": {
        "name": "vit_nano_patch4_16",
        "init_values": 0.1,
        "qk_norm": True,
        "reg_tokens": 2,
    },
    "simple_vit": {"name": "simple_vit_nano_patch4_16"},
    "deit": {"name": "deit_nano_distilled_patch4_16"},
    "cait": {"name": "cait_nano_patch4_16", "depth": 1},
    "vit_sd": {"name": "vit_sd_nano_patch4_16"},
    "cct_8px": {"name": "cct_nano_patch2_8"},
    "cct_16px": {"name": "cct_nano_patch4_16"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_variant_trains_an_epoch_on_digits(family, tmp_path):
    from vitkit.engine.trainer import Trainer

    model = {"depth": 2, **FAMILIES[family]}
    recipe = recipe_from_dict(
        {
            "name": family,
            "model": model,
            "data": {"dataset": "digits", "batch_size": 128},
            "optimizer": {"name": "adamw", "lr": 3e-3},
            "train": {"epochs": 1},
            "output": {"dir": str(tmp_path)},  # plots and report on, as a user's run has them
        }
    )
    trainer = Trainer(recipe)
    summary = trainer.fit()
    assert math.isfinite(summary["final_train_loss"]) and summary["final_train_loss"] > 0
    assert 0.0 <= summary["test_acc"] <= 1.0
    (run_dir,) = (tmp_path / family).iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["test_acc"] == summary["test_acc"]
    assert {"loss.png", "accuracy.png", "confusion.png", "report_test.json"} <= {p.name for p in run_dir.rglob("*")}
    trainer.model.eval()
    images, _ = next(iter(trainer.test_loader))
    assert trainer.model(images).shape == (len(images), 10)


@pytest.mark.parametrize(
    "name",
    ["simple_vit_tiny_patch4_32", "deit_tiny_distilled_patch4_32", "cait_xxs_patch4_32", "vit_sd_tiny_patch4_32"]
    + ["cct_7_3x1_32", "cct_2_3x2_32"],
)
def test_cifar_configs_forward_backward(name):
    model = vitkit.create_model(name, depth=1)
    assert model.img_size == 32 and model.num_classes == 10
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_vit_options_add_timm_named_parameters():
    model = vitkit.create_model(
        "vit",
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=4,
        init_values=0.1,
        qk_norm=True,
        reg_tokens=3,
    )
    keys = model.state_dict().keys()
    assert {"blocks.0.ls1.gamma", "blocks.0.ls2.gamma", "blocks.0.attn.q_norm.weight", "reg_token"} <= keys
    assert model.num_prefix_tokens == 4 and model.pos_embed.shape == (1, 16 + 4, 32)
    assert torch.allclose(model.blocks[0].ls1.gamma, torch.full((32,), 0.1))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 1000)


def test_block_passes_qk_norm_only_when_set():
    class PlainAttention(nn.Module):  # a plugin attention without a qk_norm option
        def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
            super().__init__()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)

    block = Block(16, 2, attention=PlainAttention)
    assert block(torch.randn(1, 5, 16)).shape == (1, 5, 16)
    with pytest.raises(ValueError, match="attention 'PlainAttention' has no 'qk_norm' option"):
        Block(16, 2, attention=PlainAttention, qk_norm=True)
    normed = Block(16, 2, attention={"name": "softmax"}, qk_norm=True)
    assert isinstance(normed.attn.q_norm, nn.LayerNorm)


def test_deit_averages_heads_unless_a_distillation_loss_asks_for_both():
    model = vitkit.create_model("deit_nano_distilled_patch4_16", depth=1)
    x = torch.randn(3, 1, 16, 16)
    model.train()
    assert model(x).shape == (3, 10)  # plain losses see averaged logits
    model.distilled_training = True
    cls, dist = model(x)
    assert cls.shape == dist.shape == (3, 10)
    model.eval()
    tokens = model.forward_features(x)
    expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
    assert torch.allclose(model(x), expected)


def test_shifted_patch_tokenizer_shifts_by_half_a_patch():
    from vitkit.models.small_data import ShiftedPatchTokenizer

    spt = ShiftedPatchTokenizer(img_size=8, patch_size=4, in_chans=1, embed_dim=16)
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    stacked = spt.shifted(x)
    assert stacked.shape == (1, 5, 8, 8)
    assert torch.equal(stacked[:, 0], x[:, 0])
    assert torch.equal(stacked[0, 1, 2:, 2:], x[0, 0, :-2, :-2])  # moved right and down by 2
    assert torch.equal(stacked[0, 4, :-2, :-2], x[0, 0, 2:, 2:])  # moved left and up by 2
    assert stacked[0, 1, :2].abs().sum() == 0  # zero fill
    assert spt(x).shape == (1, 4, 16)


def test_small_data_vit_uses_lsa():
    from vitkit.models.small_data import LocalitySelfAttention

    model = vitkit.create_model("vit_sd_nano_patch4_16", depth=1)
    attn = model.blocks[0].attn
    if "lsa" in vitkit.ATTENTION:
        assert type(attn) is vitkit.ATTENTION.get("lsa").factory
    else:
        assert isinstance(attn, LocalitySelfAttention)
        out = attn(torch.randn(2, 5, 64))
        out.sum().backward()
        assert out.shape == (2, 5, 64) and attn.log_scale.grad is not None
    swapped = vitkit.create_model("vit_sd_nano_patch4_16", depth=1, attention="softmax")
    assert type(swapped.blocks[0].attn).__name__ == "SoftmaxAttention"


def test_cct_tokens_and_sequence_pooling():
    model = vitkit.create_model("cct_nano_patch2_8")
    assert model.tokenizer.num_patches == 16
    tokens = model.forward_features(torch.randn(2, 1, 8, 8))
    assert tokens.shape == (2, 16, 64)
    weights = model.pool.attention_pool(tokens).squeeze(-1).softmax(dim=1)
    assert torch.allclose(model.forward_head(tokens, pre_logits=True), (weights[..., None] * tokens).sum(1), atol=1e-6)


def test_cait_class_attention_leaves_patches_alone():
    model = vitkit.create_model("cait_nano_patch4_16").eval()
    x = torch.randn(2, 1, 16, 16)
    patches = model.blocks(model.patch_embed(x) + model.pos_embed)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 1 + 16, 64)
    assert torch.allclose(tokens[:, 1:], model.norm(patches), atol=1e-6)


def test_every_family_is_listed_with_a_description(cli):
    code, out, _ = cli("list", "models")
    assert code == 0
    for name in ("simple_vit_nano_patch4_16", "deit_nano_distilled_patch4_16", "cait_nano_patch4_16"):
        assert name in out
    for name in ("vit_sd_nano_patch4_16", "cct_nano_patch2_8"):
        assert name in out


@pytest.mark.parametrize("name", [spec["name"] for spec in FAMILIES.values()])
def test_flops_are_counted_for_every_family(name):
    from vitkit.engine.flops import count_flops

    model = vitkit.create_model(name)
    flops = count_flops(model, model.in_chans, model.img_size)
    params = sum(p.numel() for p in model.parameters())
    assert params < flops < 1e9  # at least a multiply-add per weight, far below a GFLOP at this size
