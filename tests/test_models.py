import pytest
import torch

import vitkit
from vitkit import UserError


@pytest.mark.parametrize(
    ("name", "params"),
    [("vit_tiny_patch16_224", 5_717_416), ("vit_small_patch16_224", 22_050_664), ("vit_base_patch16_224", 86_567_656)],
)
def test_parameter_counts_match_timm(name, params):
    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("name", vitkit.list_models("vit_*"))
def test_every_config_runs_forward_and_backward(name):
    overrides = {"depth": 1} if "224" in name or "32" in name else {}
    model = vitkit.create_model(name, **overrides)
    x = torch.randn(2, model.in_chans, model.img_size, model.img_size)
    logits = model(x)
    assert logits.shape == (2, model.num_classes)
    logits.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None


@pytest.mark.parametrize(
    "options",
    [
        {"class_token": True, "global_pool": "token", "pos_embed": "learn"},
        {"class_token": False, "global_pool": "avg", "pos_embed": "sincos"},
        {"class_token": True, "global_pool": "avg", "pos_embed": "none"},
        {"patch_norm": True, "drop_rate": 0.1, "attn_drop_rate": 0.1, "drop_path_rate": 0.1},
    ],
)
def test_pooling_and_position_options(options):
    model = vitkit.create_model(
        "vit", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5, **options
    )
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 5)


def test_same_weights_same_logits_as_timm():
    timm = pytest.importorskip("timm")
    reference = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10).eval()
    model = vitkit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10).eval()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert (model(x) - reference(x)).abs().max().item() < 1e-4


def test_bad_config_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        vitkit.create_model("vit", embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="needs class_token"):
        vitkit.create_model("vit", class_token=False, global_pool="token")
    with pytest.raises(UserError, match="no option 'depht'"):
        vitkit.create_model("vit_tiny_patch16_224", depht=3)
    with pytest.raises(UserError, match="did you mean 'vit_tiny_patch16_224'"):
        vitkit.create_model("vit_tiny_patch16_244")


def test_no_weight_decay_groups():
    from vitkit.optim import param_groups

    model = vitkit.create_model("vit", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=4)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"cls_token", "pos_embed", "norm.weight", "head.bias"} <= no_decay_names
    assert "blocks.0.attn.qkv.weight" in decay_names and not any(n.endswith("bias") for n in decay_names)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
