"""Position-encoding and MLP registries: rope2d (2-D axial rotary on q and k), swiglu, timm parity."""

import json

import pytest
import torch
from einops import rearrange
from torch import nn

import vitkit
from vitkit import MLP, POS_EMBED, UserError
from vitkit.layers.pos_embed import Rope2d

from .conftest import TINY_DIGITS


def test_builtins_are_registered_with_docs(cli):
    assert POS_EMBED.list() == ["learn", "none", "rope2d", "sincos"]
    assert MLP.list() == ["mlp", "swiglu"]
    assert all(e.doc and e.origin == "vitkit" for e in POS_EMBED.entries() + MLP.entries())
    code, out, _ = cli("list", "pos_embed")
    assert code == 0 and "rope2d" in out and "rotary" in out
    code, out, _ = cli("list", "mlp")
    assert code == 0 and "swiglu" in out


def test_rope2d_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    grid, prefix = 4, 1
    rope = Rope2d(head_dim=8, grid_size=grid, num_prefix_tokens=prefix, theta=10.0)
    q, k = torch.randn(8), torch.randn(8)  # the same content at every position
    qs, ks = rope(q.expand(1, 1, prefix + grid * grid, 8), k.expand(1, 1, prefix + grid * grid, 8))
    torch.testing.assert_close(qs[..., :prefix, :], q.expand(1, 1, prefix, 8))  # class token not rotated
    torch.testing.assert_close(qs.norm(dim=-1), q.norm().expand(1, 1, prefix + grid * grid))  # a rotation
    scores = rearrange((qs[0, 0, prefix:] @ ks[0, 0, prefix:].T), "(r1 c1) (r2 c2) -> r1 c1 r2 c2", r1=grid, r2=grid)
    # shifting both tokens by (1, 1) or (1, 0) changes nothing; the scores do vary with the offset
    torch.testing.assert_close(scores[1:, 1:, 1:, 1:], scores[:-1, :-1, :-1, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[1:, :, 1:, :], scores[:-1, :, :-1, :], atol=1e-5, rtol=1e-5)
    assert (scores[0, 0, 0, 0] - scores[0, 0, 0, 1]).abs() > 1e-3 and (
        scores[0, 0, 0, 0] - scores[0, 0, 1, 0]
    ).abs() > 1e-3
    with pytest.raises(ValueError, match="divisible by 4"):
        Rope2d(head_dim=6, grid_size=4)


def test_rope2d_model_rotates_in_every_attention_and_adds_no_keys():
    plain = vitkit.create_model("vit_nano_patch4_16", depth=2, pos_embed="none")
    rope = vitkit.create_model("vit_nano_patch4_16", depth=2, pos_embed={"name": "rope2d", "theta": 50.0})
    assert rope.state_dict().keys() == plain.state_dict().keys()
    assert all(block.attn.rope is rope.blocks[0].attn.rope for block in rope.blocks)
    assert rope.pos_embed is None and rope.blocks[0].attn.rope.cos.shape == (16, 16)
    with torch.no_grad():
        plain.blocks[0].attn.qkv.weight.mul_(50)  # peaked attention, so positions show
        rope.load_state_dict(plain.state_dict())
        tokens = torch.randn(2, 16, 64)
        rotated, unrotated = rope.blocks[0].attn.attention_map(tokens), plain.blocks[0].attn.attention_map(tokens)
        assert (rotated - unrotated).abs().max() > 0.05  # same weights: positions now change the attention
        torch.testing.assert_close(rotated.sum(-1), torch.ones(2, 4, 16))
    cls = vitkit.create_model("vit_tiny_patch4_32", depth=1, pos_embed="rope2d", reg_tokens=2)
    assert cls.blocks[0].attn.rope.num_prefix_tokens == 3 and cls(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(UserError, match="no timm VisionTransformer equivalent"):
        vitkit.models.timm_config(rope)


def test_rope2d_needs_an_attention_on_the_base_class():
    class Plain(nn.Module):
        def __init__(self, dim, num_heads=8, **kwargs):
            super().__init__()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            return self.proj(x)

    with pytest.raises(ValueError, match="needs an attention on vitkit.Attention"):
        vitkit.create_model("vit_nano_patch4_16", depth=1, pos_embed="rope2d", attention=Plain)


def test_swiglu_matches_timm():
    timm = pytest.importorskip("timm")
    from timm.layers import SwiGLU as TimmSwiGLU

    torch.manual_seed(0)
    ours = MLP.create("swiglu", dim=16, hidden_dim=24)
    theirs = TimmSwiGLU(16, 24)
    theirs.load_state_dict(ours.state_dict())  # same keys: fc1_g, fc1_x, fc2
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x))
    model = vitkit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2, mlp="swiglu").eval()
    reference = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=4, embed_dim=192, depth=2, num_heads=3, mlp_layer=TimmSwiGLU, act_layer=nn.SiLU
    ).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)


def test_unknown_pos_embed_is_a_recipe_error(cli, write_recipe):
    recipe = write_recipe(TINY_DIGITS)
    code, _, err = cli("run", recipe, "--dry-run", "--set", 'model.pos_embed="rope3d"')
    assert code == 2 and "unknown pos_embed 'rope3d'" in err and "rope2d" in err
    code, _, err = cli("run", recipe, "--dry-run", "--set", 'model.mlp="swiglu"', "--set", "model.num_heads=8")
    assert code == 0, err


@pytest.mark.slow
def test_compare_varies_pos_embed_and_mlp(cli, tmp_path, write_recipe):
    recipe = write_recipe(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    code, out, err = cli(
        "compare",
        recipe,
        "--vary",
        "model.pos_embed=sincos,rope2d",
        "--vary",
        'model.mlp="swiglu"',
        "--set",
        f'output.dir="{tmp_path}"',
        "--out",
        tmp_path / "cmp",
    )
    assert code == 0, err
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert sorted("rope2d" in r["name"] for r in rows) == [False, True]
    assert all(r["test_acc"] > 0 for r in rows)
