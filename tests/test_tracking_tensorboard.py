"""The TensorBoard plugin (plugins/vitkit-tensorboard, installed as CI installs plugins/*): two digits
epochs, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import TINY_DIGITS, installed

pytestmark = pytest.mark.skipif(not installed("vitkit-tensorboard"), reason="plugins/vitkit-tensorboard not installed")


def _accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_two_digits_epochs_in_tensorboard(tmp_path, cli, write_recipe, monkeypatch):
    from tensorboard.plugins.hparams import plugin_data_pb2

    monkeypatch.delenv("TENSORBOARD_LOGDIR", raising=False)
    monkeypatch.setenv("VITKIT_TENSORBOARD", "1")  # tests/conftest.py switches it off for the other tests
    recipe = write_recipe(TINY_DIGITS + f'[output]\ndir = "{tmp_path / "runs"}"\n')
    code, _, err = cli("run", recipe)
    assert code == 0, err
    assert "warning: plugin" not in err
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    events = _accumulator(run_dir / "tb")
    tags = events.Tags()

    # every numeric metrics.csv column, per epoch, equal to the file's values
    rows = list(csv.DictReader((run_dir / "metrics.csv").read_text().splitlines()))
    columns = [c for c in rows[0] if c != "epoch" and rows[0][c]]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "time", "img_per_s"} <= set(columns)
    for column in columns:
        logged = events.Scalars(f"epoch/{column}")
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in rows], rel=1e-4)

    # the LR of every optimizer update: steps 1..N, positive, ending at the last epoch's value
    lrs = events.Scalars("step/lr")
    assert [e.step for e in lrs] == list(range(1, len(lrs) + 1)) and len(lrs) % 2 == 0 and len(lrs) > 4
    assert all(e.value > 0 for e in lrs)

    # no graph unless asked (VITKIT_TENSORBOARD_GRAPH=1); the confusion matrix and mistakes at the end
    assert not tags["graph"]
    assert {"test/confusion_matrix", "test/confusion_plot", "test/misclassified"} <= set(tags["images"])
    confusion = events.Images("test/confusion_matrix")[0]
    assert confusion.step == 2 and confusion.width == confusion.height >= 10 * 10

    # hparams: the flattened recipe, with test_acc as metric
    summary = json.loads((run_dir / "summary.json").read_text())
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"hparam/test_acc", "hparam/best_val_acc"}
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.name"].string_value == "vit_nano_patch4_16"
    assert hparams["optimizer.lr"].number_value == pytest.approx(3e-3)
    assert hparams["train.epochs"].number_value == 2
    (test_acc,) = events.Scalars("hparam/test_acc")
    assert test_acc.value == pytest.approx(summary["test_acc"])


def test_log_dir_and_switch(tmp_path, monkeypatch):
    import vitkit_tensorboard

    run = SimpleNamespace(run_dir=tmp_path / "runs" / "cifar" / "20260101-120000", recipe=SimpleNamespace(name="cifar"))
    monkeypatch.delenv("TENSORBOARD_LOGDIR", raising=False)
    assert vitkit_tensorboard.log_dir(run) == run.run_dir / "tb"
    monkeypatch.setenv("TENSORBOARD_LOGDIR", str(tmp_path / "tb"))
    assert vitkit_tensorboard.log_dir(run) == tmp_path / "tb" / "cifar" / "20260101-120000"
    monkeypatch.setenv("VITKIT_TENSORBOARD", "0")
    vitkit_tensorboard.vitkit_on_run_start(run=run)
    assert not (tmp_path / "tb").exists()
    assert vitkit_tensorboard.flatten({"a": {"b": 1, "c": [1, "x"]}, "d": None}) == {
        "a.b": 1,
        "a.c": '[1, "x"]',
        "d": "None",
    }


def _hook_run(tmp_path: Path) -> SimpleNamespace:
    """What the hooks read of a run: a fresh (no history) digits-sized ViT on the CPU."""
    import torch

    import vitkit

    model = vitkit.create_model("vit_nano_patch4_16", num_classes=10, in_chans=1, img_size=16)
    run_dir = tmp_path / "runs" / "tiny" / "20260101-120000"
    run_dir.mkdir(parents=True)
    return SimpleNamespace(
        run_dir=run_dir, recipe=SimpleNamespace(name="tiny"), history=[], model=model, device=torch.device("cpu")
    )


def test_i23_12_step_lrs_reach_the_writer_at_the_epoch_end_not_every_step(tmp_path, monkeypatch):
    """Each hand-over to TensorBoard's writer thread cost ~5 ms of GIL switching, so per-step LRs wait in
    memory until the epoch ends (snag 12: the plugin added 23 s to a 67 s digits run)."""
    import vitkit_tensorboard
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.delenv("TENSORBOARD_LOGDIR", raising=False)
    monkeypatch.setenv("VITKIT_TENSORBOARD", "1")
    calls: list[str] = []
    add_scalar = SummaryWriter.add_scalar
    monkeypatch.setattr(
        SummaryWriter, "add_scalar", lambda self, tag, *a, **k: (calls.append(tag), add_scalar(self, tag, *a, **k))[1]
    )
    run = _hook_run(tmp_path)
    vitkit_tensorboard.vitkit_on_run_start(run=run)
    for epoch in (1, 2):
        for step in range(1, 22):
            vitkit_tensorboard.vitkit_on_train_step(run=run, step=(epoch - 1) * 21 + step, lr=1e-3 * step)
        assert calls == [] if epoch == 1 else len(calls) == 21 + 1  # nothing written during the steps
        vitkit_tensorboard.vitkit_on_epoch_end(run=run, epoch=epoch, metrics={"epoch": epoch, "val_acc": 0.5})
        assert calls.count("step/lr") == 21 * epoch and calls[-1] == "epoch/val_acc"
    vitkit_tensorboard.vitkit_on_train_step(run=run, step=43, lr=1e-4)  # a step after the last epoch end
    vitkit_tensorboard.vitkit_on_run_failed(run=run)
    lrs = _accumulator(run.run_dir / "tb").Scalars("step/lr")
    assert [e.step for e in lrs] == list(range(1, 44)) and lrs[-1].value == pytest.approx(1e-4)


@pytest.mark.parametrize("graph", ["0", "1"])
def test_i23_12_the_model_graph_only_when_asked(tmp_path, monkeypatch, graph):
    import vitkit_tensorboard

    monkeypatch.delenv("TENSORBOARD_LOGDIR", raising=False)
    monkeypatch.setenv("VITKIT_TENSORBOARD", "1")
    monkeypatch.setenv("VITKIT_TENSORBOARD_GRAPH", graph)
    run = _hook_run(tmp_path)
    vitkit_tensorboard.vitkit_on_run_start(run=run)
    vitkit_tensorboard.vitkit_on_run_failed(run=run)
    assert bool(_accumulator(run.run_dir / "tb").Tags()["graph"]) == (graph == "1")
