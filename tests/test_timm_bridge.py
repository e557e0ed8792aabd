"""timm interoperability: same weights give the same logits, conversions round-trip, positions resize."""

import json
import subprocess
import sys

import pytest
import torch

import vitkit
from vitkit import UserError
from vitkit.models import timm_config, to_timm_model, to_timm_state_dict

timm = pytest.importorskip("timm")


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("vit_tiny_patch16_224", ".pth"),
        ("vit_small_patch16_224", ".safetensors"),
        pytest.param("vit_base_patch16_224", ".bin", marks=pytest.mark.slow),
    ],
)
def test_timm_weights_give_timm_logits(name, suffix, tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    model = vitkit.create_model(name, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert _max_diff(model(x), reference(x)) < 1e-4


def test_custom_small_config_matches_timm(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10).eval()
    torch.save(reference.state_dict(), tmp_path / "small.pth")
    model = vitkit.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, num_classes=10, checkpoint_path=tmp_path / "small.pth"
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), reference(x)) < 1e-4


@pytest.mark.parametrize(
    "options",
    [
        {"init_values": 0.1, "qk_norm": True},
        {"reg_tokens": 4, "no_embed_class": True, "class_token": False, "global_pool": "avg", "fc_norm": True},
        {"pre_norm": True, "qkv_bias": False},
    ],
)
def test_timm_options_are_read_from_the_state_dict(options, tmp_path):
    from timm.models.vision_transformer import VisionTransformer

    size = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 2, "num_heads": 4, "num_classes": 10}
    reference = VisionTransformer(**size, **options).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    # only the sizes are given; class token, registers, LayerScale, norms come from the keys
    model = vitkit.create_model("vit", **size, checkpoint_path=tmp_path / "w.pth").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), reference(x)) < 1e-4


def test_deit_distilled_matches_timm(tmp_path):
    reference = timm.create_model("deit_tiny_distilled_patch16_224", depth=2).eval()
    torch.save(reference.state_dict(), tmp_path / "deit.pth")
    model = vitkit.create_model("deit_tiny_distilled_patch16_224", depth=2, checkpoint_path=tmp_path / "deit.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert _max_diff(model.eval()(x), reference(x)) < 1e-4


@pytest.mark.parametrize("name", ["vit_tiny_patch4_32", "vit_nano_patch4_16", "simple_vit_nano_patch4_16"])
def test_round_trip_vitkit_timm_vitkit(name, tmp_path):
    model = vitkit.create_model(name, depth=2, reg_tokens=0).eval() if name.startswith("vit_") else None
    model = model or vitkit.create_model(name, depth=2).eval()
    x = torch.randn(2, model.in_chans, model.img_size, model.img_size)
    reference = to_timm_model(model).eval()  # timm's class, built from timm_config(model)
    assert isinstance(reference, timm.models.vision_transformer.VisionTransformer)
    torch.save(reference.state_dict(), tmp_path / "timm.pth")
    back = vitkit.create_model(name, depth=2, checkpoint_path=tmp_path / "timm.pth").eval()
    with torch.no_grad():
        assert _max_diff(reference(x), model(x)) < 1e-5
        assert _max_diff(back(x), model(x)) < 1e-6
    exported = to_timm_state_dict(back)
    for key, value in to_timm_state_dict(model).items():
        assert torch.equal(exported[key], value), key


def test_pos_embed_resize_matches_timm_resample(tmp_path):
    from timm.layers import resample_abs_pos_embed

    reference = timm.create_model("vit_tiny_patch16_224", depth=1).eval()
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, img_size=160, checkpoint_path=tmp_path / "w.pth")
    expected = resample_abs_pos_embed(reference.pos_embed.detach(), [10, 10], num_prefix_tokens=1)
    assert model.pos_embed.shape == (1, 1 + 100, 192)
    assert _max_diff(model.pos_embed.detach(), expected) < 1e-5
    resized = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=160).eval()
    resized.load_state_dict({**reference.state_dict(), "pos_embed": expected})
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        assert _max_diff(model.eval()(x), resized(x)) < 1e-4


def test_vitkit_checkpoint_carries_its_options(tmp_path, cli):
    from .conftest import TINY_DIGITS

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    assert cli("run", recipe, "--set", f'output.dir="{tmp_path}"')[0] == 0
    (run_dir,) = (tmp_path / "tiny").iterdir()
    x = torch.randn(2, 1, 16, 16)
    from_pt = vitkit.create_model("vit_nano_patch4_16", checkpoint_path=run_dir / "checkpoints" / "best.pt").eval()
    from_st = vitkit.create_model("vit_nano_patch4_16", checkpoint_path=run_dir / "model.safetensors").eval()
    assert len(from_pt.blocks) == 2  # depth = 2 came from the recipe saved with the weights
    with torch.no_grad():
        assert torch.equal(from_pt(x), from_st(x))


def test_mismatch_is_a_clear_user_error(tmp_path):
    torch.save(timm.create_model("vit_tiny_patch16_224", depth=1).state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(UserError, match=r"does not fit model vit_small_patch16_224: shape mismatch: .*\(192,\)"):
        vitkit.create_model("vit_small_patch16_224", depth=1, checkpoint_path=tmp_path / "tiny.pth")
    with pytest.raises(UserError, match="unexpected keys: blocks.1"):
        torch.save(timm.create_model("vit_tiny_patch16_224", depth=2).state_dict(), tmp_path / "two.pth")
        vitkit.create_model("vit_tiny_patch16_224", depth=1, checkpoint_path=tmp_path / "two.pth")
    with pytest.raises(UserError, match="does not exist"):
        vitkit.create_model("vit_tiny_patch16_224", checkpoint_path=tmp_path / "nope.pth")
    with pytest.raises(UserError, match="no timm equivalent"):
        timm_config(vitkit.create_model("cct_nano_patch2_8"))


def test_fine_tuning_keeps_a_fresh_head_for_other_classes(tmp_path):
    reference = timm.create_model("vit_tiny_patch16_224", depth=1)
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    model = vitkit.create_model("vit_tiny_patch16_224", depth=1, num_classes=10, checkpoint_path=tmp_path / "w.pth")
    assert model.head.weight.shape == (10, 192)
    assert torch.equal(model.blocks[0].attn.qkv.weight, reference.blocks[0].attn.qkv.weight)


def test_any_timm_model_by_name(tmp_path, monkeypatch):
    model = vitkit.create_model("timm/resnet18", num_classes=10, in_chans=1)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    torch.save(model.state_dict(), tmp_path / "r.pth")
    again = vitkit.create_model("timm/resnet18", in_chans=1, checkpoint_path=tmp_path / "r.pth")
    assert torch.equal(again.fc.weight, model.fc.weight)
    with pytest.raises(UserError, match="did you mean 'timm/resnet18'"):
        vitkit.create_model("timm/resnet1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # pretrained weights: the HF cache only, here empty
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"timm/resnet18\.a1_in1k \(model\.safetensors\) are not in the Hugging Face"):
        vitkit.create_model("timm/resnet18", pretrained=True)


def test_recipe_trains_a_timm_model_and_starts_from_weights(tmp_path, cli):
    from .conftest import TINY_DIGITS

    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    common = ("--set", f'output.dir="{tmp_path}"')
    code, _, err = cli("run", recipe, *common, "--set", 'model={name="timm/test_resnet", img_size=16}')
    assert code == 0, err
    summary = json.loads(next((tmp_path / "tiny").glob("*/summary.json")).read_text())
    assert summary["model"] == "timm/test_resnet" and summary["params"] > 0
    torch.save(timm.create_model("vit_tiny_patch16_224", depth=2).state_dict(), tmp_path / "w.pth")
    code, out, err = cli(
        "run",
        recipe,
        *common,
        "--set",
        f'model={{name="vit_tiny_patch16_224", depth=2, img_size=16, checkpoint_path="{tmp_path / "w.pth"}"}}',
    )
    assert code == 0, err
    assert "head left freshly initialised" in out  # and the RGB patch filters were summed for grey digits
    (tmp_path / "w.pth").rename(tmp_path / "moved.pth")  # the starting weights are not needed to re-score the run
    (run_dir,) = [p.parent for p in (tmp_path / "tiny").glob("*/summary.json") if "vit_tiny" in p.read_text()]
    code, _, err = cli("eval", run_dir)
    assert code == 0, err
    (tmp_path / "moved.pth").rename(tmp_path / "w.pth")
    code, _, err = cli("run", recipe, *common, "--set", f'model.checkpoint_path="{tmp_path / "w.pth"}"')
    assert code == 2 and "model.checkpoint_path" in err and "w.pth has learned position embeddings" in err


def test_help_and_list_do_not_import_timm():
    code = "import sys; from vitkit.cli import main; main(['list', 'models']); assert 'timm' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cct_nano_patch2_8" in result.stdout
