"""FLOPs include attention's matmuls on every device; GMACs (the papers' "FLOPs") are shown beside GFLOPs."""

import contextlib

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import vitkit
from vitkit.engine.flops import count_flops, gmacs


def _attentions() -> list[str]:
    with contextlib.suppress(ImportError):  # the example plugin (installed in CI) runs SDPA too
        import vitkit_gated_attention  # noqa: F401
    return vitkit.ATTENTION.list()


@pytest.mark.parametrize("attention", _attentions())
def test_sdpa_is_counted_like_explicit_matmuls(attention):
    model = vitkit.create_model("vit_nano_patch4_16", attention=attention, depth=2)
    fused = count_flops(model, model.in_chans, model.img_size)
    with sdpa_kernel(SDPBackend.MATH):  # the reference: SDPA decomposed into bmm, softmax, bmm
        explicit = count_flops(model, model.in_chans, model.img_size)
    assert fused == explicit


def test_attention_matmuls_of_one_layer():
    q = torch.randn(2, 3, 17, 8)
    from vitkit.engine.flops import counter

    with counter() as flops:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert flops.get_total_flops() == 2 * (2 * 2 * 3 * 17 * 17 * 8)  # q k^T and attn v, a multiply-add = 2


def test_vit_small_at_224_is_the_deit_papers_4_6_gmacs():
    model = vitkit.create_model("vit_small_patch16_224", num_classes=1000, img_size=224, patch_size=16)
    flops = count_flops(model, 3, 224)
    assert round(gmacs(flops), 1) == 4.6  # DeiT-S: 4.6 "FLOPs" (multiply-adds)
    assert round(flops / 1e9, 1) == 9.2


def test_dry_run_shows_gmacs(cli):
    from .conftest import RECIPES

    code, out, err = cli(
        "run", RECIPES / "vit_small.toml", "--dry-run", "--set", "model.img_size=224", "--set", "model.patch_size=16"
    )
    assert code == 0, err
    line = next(line for line in out.splitlines() if "GMACs/img" in line)
    assert "4.6" in line
    assert "9.2" in next(line for line in out.splitlines() if "GFLOPs/img" in line)


def test_bench_reports_gmacs_and_counts_attention_in_tflops():
    from vitkit.commands.bench.measure import BenchSpec, run_bench

    model = vitkit.create_model("vit_nano_patch4_16", depth=1)
    chans = model.in_chans
    spec = BenchSpec(model, "nano", 16, chans, 10, batch_size=4, modes=("infer",), iters=1, repeats=1, warmup=0)
    result = run_bench(spec)
    flops = count_flops(model, chans, 16)
    assert result["gflops_per_img"] == flops / 1e9 and result["gmacs_per_img"] == flops / 2e9
    (row,) = result["rows"]
    assert row["tflops"] == pytest.approx(flops * row["img_per_s"] / 1e12)
