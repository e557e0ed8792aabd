"""Engine features: gradient accumulation, EMA, early stopping, clipping, losses, distillation, bf16 on CPU."""

import csv
import json

import pytest
import torch

from vitkit import LOSSES, UserError
from vitkit.engine.console import EpochProgress
from vitkit.engine.early_stopping import EarlyStopping
from vitkit.engine.trainer import Trainer
from vitkit.recipe import recipe_from_dict
from vitkit.runs.checkpoint import load_checkpoint


def tiny(tmp_path, **sections):
    data = {
        "name": "tiny",
        "model": {"name": "vit_nano_patch4_16", "depth": 1},
        "data": {"dataset": "digits", "batch_size": 64},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "scheduler": {"name": "constant"},
        "train": {"epochs": 2},
        "output": {"dir": str(tmp_path)},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return recipe_from_dict(data)


def one_epoch(trainer):
    with EpochProgress(1, len(trainer.train_loader)) as progress:
        progress.start_epoch(1, 0.0)
        return trainer.train_epoch(1, progress)


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    states = []
    for batch, accum in ((64, 1), (32, 2), (16, 4)):
        recipe = tiny(
            tmp_path,
            data={"batch_size": batch},
            optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
            train={"grad_accum_steps": accum, "clip_grad": 1.0},
        )
        trainer = Trainer(recipe)
        assert trainer.steps_per_epoch == 20  # 1,295 images: 20 updates of 64 in every setting
        one_epoch(trainer)
        states.append(trainer.model.state_dict())
    for other in states[1:]:
        for key, value in states[0].items():
            assert torch.allclose(value, other[key], atol=2e-5), key
    moved = Trainer(tiny(tmp_path)).model.state_dict()["head.weight"]
    assert not torch.allclose(moved, states[0]["head.weight"])  # training did change the weights


def test_ema_is_evaluated_saved_and_differs_from_live_weights(tmp_path):
    summary = Trainer(tiny(tmp_path, train={"ema": 0.9, "epochs": 2})).fit()
    run_dir = tmp_path / "tiny" / next((tmp_path / "tiny").iterdir()).name
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["ema"]["updates"] == 40
    live, ema = last["model"], last["ema"]["model"]
    assert set(live) == set(ema)
    assert not torch.allclose(live["head.weight"], ema["head.weight"])
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert all(0.0 <= float(r["ema_val_acc"]) <= 1.0 for r in rows)
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert summary["best_weights"] == best["best_weights"] in ("model", "ema")
    source = last["ema"]["model"] if best["best_weights"] == "ema" else last["model"]
    if best["epoch"] == 2:  # the best weights are the last epoch's: they equal what last.pt holds
        assert torch.equal(best["model"]["head.weight"], source["head.weight"])


def test_early_stopping_stops_at_the_right_epoch(tmp_path):
    # lr 0: val_acc never improves after epoch 1, so patience 2 stops after epoch 3
    recipe = tiny(
        tmp_path, optimizer={"lr": 0.0}, train={"epochs": 10, "early_stopping": {"metric": "val_acc", "patience": 2}}
    )
    summary = Trainer(recipe).fit()
    assert summary["epochs_run"] == 3
    assert "early stopping: val_acc" in summary["stop_reason"]


def test_early_stopping_rule_min_delta_and_mode():
    class FakeRun:
        stop_reason = None

        def request_stop(self, reason):
            self.stop_reason = reason

    stopper, run = EarlyStopping("val_loss", patience=2, min_delta=0.05), FakeRun()
    for epoch, loss in enumerate([1.0, 0.9, 0.88, 0.87, 0.80], start=1):
        stopper.vitkit_on_epoch_end(run=run, epoch=epoch, metrics={"val_loss": loss})
        if run.stop_reason:
            break
    assert epoch == 4 and stopper.best == 0.9  # 0.88 and 0.87 are within min_delta of 0.9
    with pytest.raises(UserError, match="no metric 'val_f1'"):
        EarlyStopping("val_f1", 1).vitkit_on_epoch_end(run=run, epoch=1, metrics={"val_acc": 0.5})


def test_clip_by_value_bounds_every_gradient(tmp_path):
    trainer = Trainer(tiny(tmp_path, train={"clip_grad": 1e-4, "clip_mode": "value"}))
    images, targets = next(iter(trainer.train_loader))
    loss, _ = trainer._compute_loss(images, targets)
    loss.backward()
    trainer._clip()
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    assert grads.abs().max().item() == pytest.approx(1e-4)


def test_auto_batch_size_on_cpu_says_it_uses_the_default(tmp_path, capsys):
    trainer = Trainer(tiny(tmp_path, data={"batch_size": "auto"}))
    assert trainer.batch_size == 64 and trainer.train_loader.batch_size == 64
    assert "data.batch_size = auto: 64" in capsys.readouterr().out


def test_bf16_autocast_trains_on_cpu(tmp_path):
    trainer = Trainer(tiny(tmp_path, train={"precision": "bf16", "channels_last": True}))
    metrics = one_epoch(trainer)
    assert trainer.precision == "bf16" and 0 < metrics["train_loss"] < 3


def test_losses_hard_and_soft_targets():
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    one_hot = torch.nn.functional.one_hot(labels, 5).float()
    ce = LOSSES.create({"name": "cross_entropy", "label_smoothing": 0.1})
    smoothed = one_hot * 0.9 + 0.1 / 5
    assert ce(logits, labels).item() == pytest.approx(ce(logits, smoothed).item(), rel=1e-5)
    soft = LOSSES.create("soft_target_cross_entropy")
    assert soft(logits, one_hot).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    bce = LOSSES.create("binary_cross_entropy")
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, one_hot)
    assert bce(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_distillation_from_a_vitkit_run_soft_and_hard(tmp_path):
    Trainer(tiny(tmp_path, train={"epochs": 1})).fit()
    run_dir = next((tmp_path / "tiny").iterdir())
    for kind in ("soft", "hard"):
        recipe = tiny(
            tmp_path / kind,
            loss={"name": "distillation", "teacher": str(run_dir), "kind": kind, "alpha": 1.0, "tau": 2.0},
        )
        trainer = Trainer(recipe)
        images, targets = next(iter(trainer.train_loader))
        teacher = trainer.loss_fn.teacher
        assert not any(p.requires_grad for p in teacher.parameters())
        # the student distilled with alpha 1 on its teacher's own weights has zero soft loss
        trainer.model.load_state_dict(teacher.state_dict())
        loss, _ = trainer._compute_loss(images, targets)
        if kind == "soft":
            assert loss.item() == pytest.approx(0.0, abs=1e-5)
        else:
            assert loss.item() == pytest.approx(
                torch.nn.functional.cross_entropy(teacher(images), teacher(images).argmax(1)).item(), rel=1e-4
            )
    with pytest.raises(UserError, match="teacher"):
        Trainer(tiny(tmp_path, loss={"name": "distillation", "teacher": str(tmp_path / "nothing")}))


def test_distillation_token_outputs_use_the_dist_head():
    from vitkit.distill import Distillation

    teacher = torch.nn.Flatten()
    loss_fn = Distillation(LOSSES.create("cross_entropy"), teacher, 2, "hard", alpha=0.5, tau=1.0)
    images = torch.tensor([[[[5.0, 0.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 5.0]]]])  # teacher says 0, then 3
    cls_logits, dist_logits = torch.zeros(2, 4), torch.zeros(2, 4)
    dist_logits[0, 0] = dist_logits[1, 3] = 20.0  # the dist head agrees with the teacher
    loss = loss_fn((cls_logits, dist_logits), torch.tensor([1, 1]), images)
    assert loss.item() == pytest.approx(0.5 * torch.log(torch.tensor(4.0)).item(), abs=1e-4)


def test_summary_reports_json(tmp_path):
    summary = Trainer(tiny(tmp_path, train={"epochs": 1, "deterministic": True})).fit()
    assert json.loads((tmp_path / "tiny" / next((tmp_path / "tiny").iterdir()).name / "summary.json").read_text())[
        "test_acc"
    ] == pytest.approx(summary["test_acc"])
    torch.use_deterministic_algorithms(False)
