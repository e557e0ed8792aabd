"""``vitkit bench``: runs on CPU, reports positive figures, and compares like with like against timm."""

from __future__ import annotations

import json

import pytest
import torch

import vitkit

TINY_VIT = """
name = "tiny_vit"
[model]
name = "vit_tiny_patch16_224"
img_size = 16
patch_size = 4
depth = 2
[data]
dataset = "digits"
batch_size = 8
"""


def _json(out: str) -> dict:
    return json.loads(out)


def test_bench_model_name_reports_positive_numbers(cli):
    code, out, err = cli(
        "bench",
        "vit_nano_patch4_16",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    result = _json(out)
    assert result["params"] > 0 and result["gflops_per_img"] > 0
    assert result["batch_size"] == 8 and result["input"] == [1, 16, 16]
    assert result["process_peak_rss_mb"] > 0
    assert {(r["model"], r["mode"]) for r in result["rows"]} == {("vitkit", "train"), ("vitkit", "infer")}
    for row in result["rows"]:
        assert row["img_per_s"] > 0 and row["step_ms"] > 0 and row["tflops"] > 0
        assert row["peak_fraction"] is None  # no GPU peak on CPU
    train, infer = (next(r for r in result["rows"] if r["mode"] == m) for m in ("train", "infer"))
    # a training step does ~3x the FLOPs of a forward pass
    assert train["tflops"] / train["img_per_s"] == pytest.approx(3 * infer["tflops"] / infer["img_per_s"])


def test_bench_recipe_vs_timm_same_model(cli, write_recipe):
    pytest.importorskip("timm")
    recipe = write_recipe(TINY_VIT)
    code, out, err = cli(
        "bench", recipe, "--train", "--steps", "1", "--repeats", "2", "--warmup", "0", "--vs", "timm", "--json"
    )
    assert code == 0, err
    result = _json(out)
    assert result["input"] == [1, 16, 16] and result["batch_size"] == 8  # shape and batch from the recipe
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"vitkit", "timm"} and all(r["mode"] == "train" for r in rows.values())
    assert rows["vitkit"]["params"] == rows["timm"]["params"] == result["params"]
    assert result["ratios"]["train"] > 0


def test_timm_twin_has_same_parameters_and_outputs():
    pytest.importorskip("timm")
    from vitkit.commands.bench.timm_twin import timm_twin

    model = vitkit.create_model("vit_small_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10).eval()
    twin = timm_twin(model).eval()
    assert type(twin).__module__.startswith("timm.")
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), twin(x), atol=1e-5)


def test_bench_user_errors(cli):
    code, _, err = cli("bench", "vit_nano_patch4_16", "--vs", "timm", "--steps", "1")
    assert code == 2 and "sin-cos" in err
    code, _, err = cli("bench", "vit_tiny_patch16_244")
    assert code == 2 and "did you mean 'vit_tiny_patch16_224'" in err
    code, _, err = cli("bench", "vit_nano_patch4_16", "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    code, _, err = cli("bench", "missing.toml")
    assert code == 2 and "missing.toml" in err


AUTO_RECIPE = """
name = "auto"
[model]
name = "vit_nano_patch4_16"
[data]
dataset = "digits"
batch_size = 8
[train]
epochs = 1
threads = 1
"""


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_i34_6_bench_auto_resolves_precision_as_the_run_does(monkeypatch, tmp_path, cli, native, expected):
    """bench resolved ``auto`` to fp32 on a native-bf16 CPU while a run of the same model picked bf16."""
    from vitkit.engine import device, efficiency
    from vitkit.engine.trainer import Trainer
    from vitkit.recipe import load_recipe

    monkeypatch.setattr(device, "cpu_native_bf16", lambda: native)  # the CPU's bf16 support, as a test hook
    monkeypatch.setattr(efficiency, "CPU_BF16_MIN_GFLOPS", 0.001)  # the digits ViT's work then pays for bf16
    recipe_path = tmp_path / "auto.toml"
    recipe_path.write_text(AUTO_RECIPE + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    code, out, err = cli(
        "bench", recipe_path, "--precision", "auto", "--train", "--batch-size", "1",
        "--steps", "1", "--repeats", "1", "--warmup", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    auto = result["precision_auto"]
    trainer = Trainer(load_recipe(recipe_path))  # a run of the same model on the same device
    assert auto["precision"] == trainer.precision == expected
    assert auto["why"].startswith(f"precision auto: {expected} (")
    rows = {row["model"]: row["precision"] for row in result["rows"]}
    if expected == "bf16":  # what auto buys: its choice timed beside fp32
        assert rows == {"vitkit bf16": "bf16", "vitkit fp32": "fp32"}
        assert auto["speedup_vs_fp32"]["train"] > 0
    else:
        assert rows == {"vitkit": "fp32"} and auto["speedup_vs_fp32"] == {}


COMPILE_AUTO_RECIPE = """
name = "compile_auto"
[model]
name = "vit_nano_patch4_16"
depth = 1
[data]
dataset = "digits"
batch_size = 64
[train]
epochs = 1
threads = 1
device = "cpu"
compile = "auto"
"""


def test_i34_6_bench_compile_auto_decides_as_the_run_does(monkeypatch, tmp_path, cli, capsys):
    """bench compiled a recipe with ``train.compile = "auto"`` always (``"auto"`` read as true) while the run
    decided from measured figures; now both decide in ``efficiency.compile_decision``. The figures come from
    the test hook (the trial compiles with the ``eager`` backend and times nothing that counts)."""
    from vitkit.engine.trainer import Trainer
    from vitkit.recipe import load_recipe

    # 5 ms saved per step: over the 12 steps left after a 20-step run's trial 0.06 s > 0.05 s of compiling
    monkeypatch.setenv("VITKIT_TEST_COMPILE_FIGURES", "10,5,0.05")
    recipe_path = tmp_path / "compile_auto.toml"
    recipe_path.write_text(COMPILE_AUTO_RECIPE + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    trainer = Trainer(load_recipe(recipe_path))
    run = trainer.fit()["compile_auto"]
    steps = len(trainer.train_loader)
    assert steps == 20 and run["choice"] == "compiled"
    assert f"train.compile auto: compiled: {run['why']}" in capsys.readouterr().out
    code, out, err = cli(
        "bench", recipe_path, "--train", "--run-steps", steps,
        "--steps", "1", "--repeats", "1", "--warmup", "0", "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert result["compile"] == "auto" and result["rows"][0]["model"] == "vitkit"  # rows eager, as the run starts
    bench = result["compile_auto"]
    same = ("choice", "why", "eager_ms", "compiled_ms", "compile_s", "remaining_steps")
    assert {key: bench[key] for key in same} == {key: run[key] for key in same}  # remaining: 20 - 8 trial steps
    assert bench["run_steps"] == steps and bench["speedup_vs_eager"] == 2.0
