"""Regression tests for the review defects of issue 17 (one test or more per item, named after it)."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.engine import build
from vitkit.recipe import recipe_from_dict


def tiny_model():
    return vitkit.create_model("vit_nano_patch4_16", num_classes=10, in_chans=1, depth=2)


# item 2: each optimizer keeps its own weight-decay default unless the recipe sets one
@pytest.mark.parametrize(("name", "default"), [("sgd", 5e-4), ("adamw", 0.05)])
def test_item02_optimizer_keeps_its_own_weight_decay_default(name, default):
    optimizer = build.build_optimizer(recipe_from_dict({"optimizer": {"name": name}}), tiny_model())
    decayed, no_decay = optimizer.param_groups
    assert decayed["weight_decay"] == pytest.approx(default)
    assert no_decay["weight_decay"] == 0.0
    assert optimizer.defaults["weight_decay"] == pytest.approx(default)


def test_item02_recipe_weight_decay_still_wins():
    recipe = recipe_from_dict({"optimizer": {"name": "sgd", "weight_decay": 0.01}})
    assert build.build_optimizer(recipe, tiny_model()).param_groups[0]["weight_decay"] == pytest.approx(0.01)


# item 3: data.batch_size = "auto" resolves in one place; the OOM advice, compare's profile and bench read it
AUTO_RUN = """
name = "auto"
seed = 0
[model]
name = "MODEL"
depth = 1
[data]
dataset = "digits"
batch_size = "auto"
[train]
epochs = 1
[output]
dir = "OUT"
"""


@vitkit.register_model("test_oom_auto", override=True)
def oom_model(num_classes: int = 10, in_chans: int = 1, img_size: int = 16, depth: int = 1) -> torch.nn.Module:
    """A model whose forward raises PyTorch's out-of-memory error (a test fault)."""

    class Oom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(in_chans * img_size * img_size, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    return Oom()


def auto_recipe(tmp_path, model="vit_nano_patch4_16"):
    path = tmp_path / "auto.toml"
    path.write_text(AUTO_RUN.replace("MODEL", model).replace("OUT", str(tmp_path / "runs")))
    return path


def test_item03_auto_batch_out_of_memory_gives_the_advice(cli, tmp_path):
    code, _, err = cli("run", auto_recipe(tmp_path, "test_oom_auto"))
    assert code == 2 and "Traceback" not in err, err
    assert "out of memory on cpu with data.batch_size = 64 (auto); set data.batch_size = 32 and " in err
    assert "train.grad_accum_steps = 2 to keep the effective batch of 64" in err


def test_item03_auto_batch_compare_profile_and_bench(cli, tmp_path):
    from vitkit.commands.compare.command import profile_run
    from vitkit.runs.checkpoint import load_checkpoint

    recipe = auto_recipe(tmp_path)
    code, _, err = cli("run", recipe)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "auto").iterdir()
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["batch_size"] == 64  # what "auto" found
    profile = profile_run(run_dir, min_seconds=0.0)
    assert profile["infer_batch"] == 4 * 64 and profile["infer_img_per_s"] > 0
    code, out, err = cli("bench", recipe, "--infer", "--steps", "1", "--repeats", "1", "--warmup", "0", "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["batch_size"] == 64


# item 5: DeiT trains its class head on the labels and its distillation head on the teacher
def tiny_trainer(tmp_path, **sections):
    """A Trainer for test_engine_features' tiny digits recipe, with its plots and report on."""
    from vitkit.engine.trainer import Trainer

    from .test_engine_features import tiny

    output = {"plots": True, **sections.pop("output", {})}
    return Trainer(tiny(tmp_path, output=output, **sections))


@pytest.mark.parametrize(("alpha", "trained", "untouched"), [(0.0, "head", "head_dist"), (1.0, "head_dist", "head")])
def test_item05_deit_heads_get_their_own_loss_terms(tmp_path, alpha, trained, untouched):
    from vitkit.runs.checkpoint import save_safetensors

    teacher_spec = {"name": "vit_nano_patch4_16", "depth": 1}
    teacher = vitkit.create_model(**teacher_spec, num_classes=10, in_chans=1)
    meta = {"model": teacher_spec, "data": {"classes": [str(i) for i in range(10)], "in_chans": 1, "img_size": 16}}
    save_safetensors(teacher, tmp_path / "teacher.safetensors", meta)
    trainer = tiny_trainer(
        tmp_path,
        model={"name": "deit_nano_distilled_patch4_16"},
        loss={"name": "distillation", "teacher": str(tmp_path / "teacher.safetensors"), "alpha": alpha},
    )
    images, targets = next(iter(trainer.train_loader))
    trainer.model.train()
    loss, logits = trainer._compute_loss(images, targets)
    loss.backward()
    grad = {name: p.grad for name, p in trainer.model.named_parameters()}
    assert grad[f"{trained}.weight"].abs().sum() > 0
    assert grad[f"{untouched}.weight"] is None or grad[f"{untouched}.weight"].abs().sum() == 0
    assert logits.shape == (64, 10)
    trainer.model.eval()  # evaluation still averages the two heads
    with torch.no_grad():
        out = trainer.model(images)
    assert isinstance(out, torch.Tensor) and out.shape == (64, 10)


# item 10: the short last accumulation group of an epoch is a mean over its own micro-batches
def test_item10_short_last_accumulation_group_is_a_full_size_update(tmp_path):
    from vitkit.engine.console import EpochProgress

    trainer = tiny_trainer(tmp_path, optimizer={"name": "sgd", "lr": 0.05}, train={"grad_accum_steps": 3})
    assert len(trainer.train_loader) == 20  # 6 groups of 3 micro-batches, then a group of 2
    batches, updates = [], []
    compute, step = trainer._compute_loss, trainer.optimizer.step

    def record_batch(images, targets):
        batches.append((images.clone(), targets.clone()))
        return compute(images, targets)

    def record_update(*args, **kwargs):
        params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        grads = {k: p.grad.detach().clone() for k, p in trainer.model.named_parameters()}
        updates.append((params, grads))
        return step(*args, **kwargs)

    trainer._compute_loss, trainer.optimizer.step = record_batch, record_update
    with EpochProgress(1, 20) as progress:
        progress.start_epoch(1, 0.0)
        trainer.train_epoch(1, progress)
    assert len(updates) == 7
    params, grads = updates[-1]
    trainer.model.load_state_dict(params)
    trainer.model.zero_grad()
    images = torch.cat([b[0] for b in batches[-2:]])
    targets = torch.cat([b[1] for b in batches[-2:]])
    compute(images, targets)[0].backward()  # the mean loss over the group's 128 images
    for name, p in trainer.model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-6, rtol=1e-4), name


# item 14: `vitkit eval` evaluates in the run's precision, so its numbers match summary.json
def test_item14_eval_uses_the_runs_precision(cli, tmp_path):
    import json

    path = tmp_path / "bf16.toml"
    path.write_text(
        AUTO_RUN.replace("MODEL", "vit_nano_patch4_16")
        .replace("OUT", str(tmp_path / "runs"))
        .replace('batch_size = "auto"', "batch_size = 64")
        .replace("epochs = 1\n", 'epochs = 1\nprecision = "bf16"\n')
    )
    code, _, err = cli("run", path)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "auto").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    code, _, err = cli("eval", run_dir)
    assert code == 0, err
    report = json.loads((run_dir / "eval_test.json").read_text())
    assert report["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)
    assert report["precision"] == "bf16"
    assert report["test_acc"] == summary["test_acc"]


# item 15: resume tie-breaks on the loss of the weights that were best (EMA's when EMA won)
def test_item15_resume_reads_the_best_weights_loss(tmp_path):
    from types import SimpleNamespace

    from vitkit.runs.checkpoint import load_checkpoint
    from vitkit.runs.resume import restore

    trainer = tiny_trainer(tmp_path, train={"ema": 0.5, "epochs": 1})
    trainer.fit()
    (run_dir,) = (tmp_path / "tiny").iterdir()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    row = state["history"][0]
    assert row["ema_val_loss"] != row["val_loss"]
    resumed = tiny_trainer(tmp_path, train={"ema": 0.5, "epochs": 2})
    resumed.run = SimpleNamespace(history=[])
    for source, key in (("ema", "ema_val_loss"), ("model", "val_loss")):
        state = {**state, "best_weights": source, "best_epoch": 1}
        _, _, best_loss, best_epoch = restore(resumed, state)[:4]
        assert best_epoch == 1 and best_loss == row[key], source


# item 18: global_pool="avg" with fc_norm unset builds timm's architecture (fc_norm on, as timm's None means)
@pytest.mark.parametrize("class_token", [True, False])
def test_item18_avg_pool_builds_timms_architecture(class_token):
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    from vitkit.models.vit import VisionTransformer

    args = dict(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=1, num_heads=2)
    args.update(class_token=class_token, global_pool="avg")
    ours, theirs = VisionTransformer(**args).state_dict(), TimmViT(**args).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert "fc_norm.weight" in ours and "norm.weight" not in ours
    explicit = VisionTransformer(**args, fc_norm=False).state_dict()
    assert "norm.weight" in explicit and "fc_norm.weight" not in explicit  # an explicit False still holds


# item 7: `bench --vs timm` builds timm's twin with timm_bridge.timm_config (avg pool + fc_norm, LayerScale, ...)
@pytest.mark.parametrize(
    "options",
    [
        {"global_pool": "avg", "class_token": False, "fc_norm": False},
        {"init_values": 1e-5},
        {"reg_tokens": 2},
        {"qk_norm": True},
    ],
)
def test_item07_bench_timm_twin_keeps_every_option(options):
    from vitkit.commands.bench.timm_twin import timm_twin

    model = vitkit.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, num_classes=10, **options)
    model.eval()
    twin = timm_twin(model).eval()
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x), atol=1e-5)


# item 11: precision = "auto" picks bf16 only where the GPU has it natively (not emulated on V100/T4)
@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_item11_auto_precision_needs_native_bf16(monkeypatch, native, expected):
    from vitkit.engine.device import select_precision

    def is_bf16_supported(including_emulation: bool = True) -> bool:  # a V100/T4 emulates bf16
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert select_precision("auto", torch.device("cuda")) == expected
    assert select_precision("auto", torch.device("cpu")) == "fp32"


# item 12: fp32 on an Ampere+ GPU uses TF32 matmuls unless train.tf32 = false; the run header says so
@pytest.mark.parametrize(
    ("precision", "device", "capability", "enabled", "expected"),
    [
        ("fp32", "cuda", (8, 0), True, True),
        ("fp32", "cuda", (9, 0), False, False),
        ("fp32", "cuda", (7, 0), True, False),  # V100: no TF32
        ("bf16", "cuda", (8, 0), True, False),  # the matmuls are bf16 already
        ("fp32", "cpu", None, True, False),
    ],
)
def test_item12_tf32_decision(monkeypatch, precision, device, capability, expected, enabled):
    from vitkit.engine.device import use_tf32

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert use_tf32(precision, torch.device(device), enabled) is expected


def test_item12_tf32_key_and_run_header(tmp_path, monkeypatch, capsys):
    from vitkit.engine import trainer as trainer_module

    seen = []
    monkeypatch.setattr(trainer_module, "use_tf32", lambda precision, device, enabled: seen.append(enabled) or True)
    monkeypatch.setattr(trainer_module, "apply_tf32", lambda on: seen.append(("applied", on)))
    trainer = tiny_trainer(tmp_path, train={"epochs": 1, "tf32": False})
    assert seen == [False, ("applied", True)] and trainer.tf32 is True
    trainer.fit()
    assert "(fp32, TF32 matmuls," in capsys.readouterr().out  # then the CPU threads
    assert torch.get_float32_matmul_precision() == "highest"  # nothing changed on CPU


# item 13: "auto" probes the trainer's real step, frees memory outside the except block, picks an even size
def test_item13_autobatch_frees_before_retry_and_picks_even_sizes():
    import sys

    from vitkit.engine.autobatch import find_batch_size

    tried, freed = [], []

    def step(size):
        tried.append(size)
        if size > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    def free():
        freed.append(sys.exc_info()[0])  # None: the exception (and its activations) is gone

    size, how = find_batch_size(step, torch.device("cuda"), limit=5000, free=free)
    assert tried == [1024, 512, 256, 128, 64, 32] and size == 16 and "32 fits" in how
    assert freed == [None] * 6
    for limit, expected in ((3, 2), (37, 18), (2, 2)):
        assert find_batch_size(lambda s: None, torch.device("cuda"), limit=limit, free=lambda: None)[0] == expected
    assert find_batch_size(lambda s: None, torch.device("cpu"), limit=1000)[0] == 64  # off GPU: the default


def test_item13_probe_is_a_real_training_step_that_leaves_no_trace(tmp_path):
    trainer = tiny_trainer(tmp_path, train={"ema": 0.9})
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema = {k: v.clone() for k, v in trainer.ema.module.state_dict().items()}
    rng = torch.get_rng_state()
    steps = []
    trainer.optimizer.step = lambda *a, _step=trainer.optimizer.step, **k: steps.append(1) or _step(*a, **k)
    trainer._probe_step(6)
    assert steps == [1]  # the optimizer stepped: its state was allocated as in training
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in weights.items())
    assert all(torch.equal(v, trainer.ema.module.state_dict()[k]) for k, v in ema.items())
    assert not trainer.optimizer.state and all(p.grad is None for p in trainer.model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


# item 16: the declared torch floor covers the APIs the code imports
def test_item16_declared_torch_floor_covers_fully_shard():
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {m[1]: tuple(int(x) for x in m[2].split(".")) for d in deps if (m := re.match(r"([\w-]+)>=([\d.]+)", d))}
    assert "from torch.distributed.fsdp import fully_shard" in (root / "vitkit/engine/distributed.py").read_text()
    assert floors["torch"] >= (2, 6)  # fully_shard is public from torch 2.6
    assert floors["torchvision"] >= (0, 21)  # torchvision 0.21 goes with torch 2.6
