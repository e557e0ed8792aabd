"""Every registered attention against the contract, plus each variant against an explicit reference."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit import ATTENTION, create_model
from vitkit.layers.attention import (
    CosineAttention,
    LinearAttention,
    LocalitySelfAttention,
    SoftmaxAttention,
    TalkingHeadsAttention,
)

from .conftest import ROOT, TINY_DIGITS

# the contract covers built-ins, installed plugins and the single-file example alike
vitkit.load_plugins(extra=[str(ROOT / "plugins" / "my_attention.py")])
NAMES = ATTENTION.list()
BUILTIN = ["cosine", "linear", "lsa", "softmax", "talking_heads"]


def test_builtins_are_registered_with_docs():
    for name in BUILTIN:
        entry = ATTENTION.get(name)
        assert entry.origin == "vitkit" and entry.doc


@pytest.mark.parametrize("name", NAMES)
def test_contract_shapes_gradients_and_signature(name):
    torch.manual_seed(0)
    attn = ATTENTION.create(name, dim=32, num_heads=4, qkv_bias=True, attn_drop=0.0, proj_drop=0.0)
    x = torch.randn(3, 9, 32, requires_grad=True)
    y = attn(x)
    assert y.shape == (3, 9, 32) and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, param in attn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"
    # defaults, extra keywords (**kwargs: forward compatible) and dropout arguments are accepted
    other = ATTENTION.create(name, dim=64, qkv_bias=False, attn_drop=0.1, proj_drop=0.1, a_future_option=1)
    assert other.train()(torch.randn(2, 5, 64)).shape == (2, 5, 64)
    assert ATTENTION.get(name).doc


@pytest.mark.parametrize("name", NAMES)
def test_contract_permutation_equivariant_and_maps(name):
    """No positions inside attention: permuting tokens permutes the output the same way."""
    torch.manual_seed(1)
    attn = ATTENTION.create(name, dim=32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    perm = torch.randperm(7)
    with torch.no_grad():
        torch.testing.assert_close(attn(x)[:, perm], attn(x[:, perm]), atol=1e-5, rtol=1e-4)
        if hasattr(attn, "attention_map"):
            weights = attn.attention_map(x)
            assert weights.shape == (2, 4, 7, 7) and torch.isfinite(weights).all()


@pytest.mark.parametrize("name", NAMES)
def test_contract_inside_a_vision_transformer(name):
    model = create_model("vit_nano_patch4_16", depth=1, attention=name)
    logits = model(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.blocks[0].attn.parameters())


def test_attention_spec_with_options_reaches_the_variant():
    model = create_model("vit_nano_patch4_16", depth=1, attention={"name": "linear", "feature_map": "relu"})
    assert model.blocks[0].attn.feature_map is F.relu
    with pytest.raises(ValueError, match="feature_map"):
        LinearAttention(32, 4, feature_map="tanh")


def _qkv(attn, x, heads):
    b, n, dim = x.shape
    return attn.qkv(x).reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)


def _merge(out):
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


def test_linear_attention_equals_quadratic_reference():
    torch.manual_seed(0)
    attn = LinearAttention(32, 4).eval()
    x = torch.randn(2, 11, 32)
    q, k, v = _qkv(attn, x, 4)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    similarity = q @ k.transpose(-2, -1)  # the N x N form the O(N) path never builds
    reference = attn.proj(_merge(similarity @ v / (similarity.sum(-1, keepdim=True) + attn.eps)))
    torch.testing.assert_close(attn(x), reference, atol=1e-5, rtol=1e-4)
    assert not hasattr(attn, "attention_map")


def test_cosine_attention_reference_and_bounded_logits():
    torch.manual_seed(0)
    attn = CosineAttention(32, 4).eval()
    x = torch.randn(2, 6, 32)
    q, k, v = _qkv(attn, x, 4)
    weights = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * 10.0).softmax(-1)
    torch.testing.assert_close(attn.attention_map(x), weights, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn(x), attn.proj(_merge(weights @ v)), atol=1e-5, rtol=1e-4)
    # logits are bounded by the scale: without biases, scaling the input changes nothing
    unbiased = CosineAttention(32, 4, qkv_bias=False)
    torch.testing.assert_close(unbiased.attention_map(x * 100), unbiased.attention_map(x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        attn.logit_scale.fill_(10.0)  # exp(10) is clamped to max_scale
    capped = attn.attention_map(x)
    expected = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * 100.0).softmax(-1)
    torch.testing.assert_close(capped, expected, atol=1e-5, rtol=1e-4)


def test_lsa_masks_the_diagonal_and_learns_its_temperature():
    torch.manual_seed(0)
    attn = LocalitySelfAttention(32, 4).eval()
    x = torch.randn(2, 6, 32)
    weights = attn.attention_map(x)
    assert torch.all(torch.diagonal(weights, dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
    q, k, v = _qkv(attn, x, 4)
    logits = q @ k.transpose(-2, -1) / math.sqrt(8)
    reference = logits.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf")).softmax(-1)
    torch.testing.assert_close(weights, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn(x), attn.proj(_merge(reference @ v)), atol=1e-5, rtol=1e-4)
    assert attn(torch.randn(1, 1, 32)).isfinite().all()  # a lone token is left unmasked


def test_talking_heads_starts_as_softmax_attention_then_mixes_heads():
    torch.manual_seed(0)
    talking, plain = TalkingHeadsAttention(32, 4).eval(), SoftmaxAttention(32, 4).eval()
    plain.load_state_dict({k: v for k, v in talking.state_dict().items() if not k.startswith("mix_")})
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(talking(x), plain(x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        talking.mix_weights.copy_(torch.eye(4).roll(1, dims=0) - torch.eye(4))  # head g takes head g-1's
    torch.testing.assert_close(talking.attention_map(x), plain.attention_map(x).roll(1, dims=1))


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_trains_one_epoch_of_digits_through_the_cli(attention, cli, tmp_path, write_recipe):
    recipe = write_recipe(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    overrides = [f"model.attention={attention}", f'output.dir="{tmp_path}"']
    code, _, err = cli("run", recipe, *[arg for value in overrides for arg in ("--set", value)])
    assert code == 0, err
    (run_dir,) = (tmp_path / "tiny").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert math.isfinite(summary["final_train_loss"]) and summary["test_acc"] > 0.1
    assert f'attention = "{attention}"' in (run_dir / "recipe.toml").read_text()
