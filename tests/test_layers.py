import math

import pytest
import torch

from vitkit.layers import Block, DropPath, Mlp, PatchEmbed, SoftmaxAttention, sincos_2d


def test_patch_embed_shape_and_errors():
    embed = PatchEmbed(img_size=32, patch_size=4, in_chans=3, embed_dim=48)
    assert embed(torch.randn(2, 3, 32, 32)).shape == (2, 64, 48)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        PatchEmbed(img_size=30, patch_size=4, in_chans=3, embed_dim=48)
    with pytest.raises(ValueError, match="expected 32x32"):
        embed(torch.randn(1, 3, 16, 16))


def test_patch_embed_is_a_linear_map_of_each_patch():
    embed = PatchEmbed(img_size=8, patch_size=4, in_chans=1, embed_dim=5)
    x = torch.randn(1, 1, 8, 8)
    tokens = embed(x)
    top_right = x[0, 0, 0:4, 4:8].reshape(-1)
    expected = embed.proj.weight.reshape(5, -1) @ top_right + embed.proj.bias
    torch.testing.assert_close(tokens[0, 1], expected)  # token 1 = row 0, column 1


def test_sincos_table():
    table = sincos_2d(4, 16)
    assert table.shape == (16, 16)
    assert torch.all(table.abs() <= 1)
    assert len({tuple(row.tolist()) for row in table}) == 16  # every position distinct
    with pytest.raises(ValueError):
        sincos_2d(4, 6)


def test_softmax_attention_matches_explicit_reference():
    torch.manual_seed(0)
    attn = SoftmaxAttention(dim=32, num_heads=4).eval()
    x = torch.randn(2, 10, 32)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    reference = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 32))
    torch.testing.assert_close(attn(x), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn.attention_map(x), weights, atol=1e-6, rtol=1e-5)


def test_attention_rejects_bad_heads():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SoftmaxAttention(dim=30, num_heads=4)


def test_block_and_mlp_shapes_and_gradients():
    block = Block(dim=24, num_heads=3, drop_path=0.1)
    x = torch.randn(3, 7, 24, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in block.parameters())
    assert Mlp(24, 48)(torch.randn(2, 24)).shape == (2, 24)


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    drop = DropPath(0.5)
    x = torch.ones(4000, 3, 5)
    y = drop(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)  # all or nothing per sample
    assert abs(y.mean().item() - 1.0) < 0.05
    drop.eval()
    assert torch.equal(drop(x), x)
