"""``vitkit export``: TorchScript/ONNX parity with PyTorch, int8 accuracy, pruning, on a tiny digits run."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import vitkit
from vitkit.commands.export.formats import PARITY_ATOL, export, load_test_split, run_export
from vitkit.runs.finished import open_run

from .conftest import ROOT, TINY_DIGITS

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")  # torch.jit.load


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("runs")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 10"))  # about 0.95 test accuracy
    assert main(["run", str(recipe), "--set", f'output.dir="{out}"']) == 0
    (path,) = (out / "tiny").iterdir()
    return path


@pytest.fixture(scope="module")
def reference(run_dir):
    """The PyTorch model with its logits divided by the run's temperature (as the exported graphs give
    them, issue 24 part 3) and a batch of 64 normalised test images."""
    from vitkit.evaluation.calibration import TemperatureScaled

    loaded = open_run(run_dir)
    _, x = load_test_split(loaded)
    return TemperatureScaled(loaded.model, loaded.temperature).eval(), x


def test_torchscript_gives_the_pytorch_logits(run_dir, reference, cli, tmp_path):
    path = tmp_path / "model.pt"
    code, out, err = cli("export", run_dir, "--format", "torchscript", "--out", path)
    assert code == 0, err
    model, x = reference
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=PARITY_ATOL, rtol=0)
        assert loaded(x[:5]).shape == (5, 10)  # any batch size
    assert "max |logit diff|" in out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed")
def test_onnx_gives_the_pytorch_logits(run_dir, reference, tmp_path):
    import json

    import onnx
    from onnx.reference import ReferenceEvaluator

    path = tmp_path / "model.onnx"
    report = export(run_dir, "onnx", out=path)
    assert report.parity is not None and report.parity <= PARITY_ATOL
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["data"]["classes"] == [str(i) for i in range(10)]
    assert meta["temperature"] == open_run(run_dir).temperature and meta["logits_divided_by_temperature"]
    model, x = reference
    logits = ReferenceEvaluator(proto).run(None, {"images": x[:7].numpy()})[0]  # batch size differs from export's
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logits), model(x[:7]), atol=PARITY_ATOL, rtol=0)


def test_int8_stays_within_one_point_of_fp32(run_dir, capsys, tmp_path):
    path = tmp_path / "int8.pt"
    report = run_export(str(run_dir), "torchscript", "int8", out=str(path))
    out = capsys.readouterr().out
    assert report.acc_before > 0.85
    assert abs(report.acc_int8 - report.acc_before) <= 0.01
    assert report.speedup is not None and report.speedup > 0
    assert "test accuracy (int8)" in out and "CPU time" in out
    # the saved file really is the int8 model: its test accuracy is the reported one
    from vitkit.evaluation.evaluate import evaluate

    loaded = open_run(run_dir)
    loader, _ = load_test_split(loaded)
    assert evaluate(torch.jit.load(str(path)), loader, torch.device("cpu")).acc == pytest.approx(report.acc_int8)
    assert path.stat().st_size < (run_dir / "model.safetensors").stat().st_size


def test_pruning_zeroes_the_share_asked_and_reports_accuracy(run_dir, tmp_path):
    path = tmp_path / "pruned.safetensors"
    report = export(run_dir, "safetensors", prune=0.3, out=path)
    assert report.sparsity == pytest.approx(0.3, abs=0.01)
    assert report.acc_pruned is not None and report.acc_pruned > 0.5
    model = vitkit.load(path).model  # the pruned file is a normal vitkit model file
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.3, abs=0.01)


def test_bad_export_options_are_user_errors(run_dir, cli):
    code, _, err = cli("export", run_dir, "--format", "onnx", "--quantize", "int8")
    assert code == 2 and "--format torchscript" in err
    code, _, err = cli("export", run_dir, "--prune", "1.5")
    assert code == 2 and "--prune" in err


def test_item20_export_never_overwrites_the_runs_outputs(run_dir, cli):
    """Issue 17 item 20: a default export goes to export/ in the run; an existing --out needs --force."""
    produced = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    code, _, err = cli("export", run_dir)
    assert code == 0, err
    assert {p: p.read_bytes() for p in produced} == produced  # nothing the run wrote changed
    assert (run_dir / "export" / "model.safetensors").is_file()
    code, _, err = cli("export", run_dir)  # the export is there now
    assert code == 2 and "--force" in err and "Traceback" not in err
    code, _, err = cli("export", run_dir, "--out", run_dir / "model.safetensors")
    assert code == 2 and "--force" in err
    assert (run_dir / "model.safetensors").read_bytes() == produced[run_dir / "model.safetensors"]
    code, _, err = cli("export", run_dir, "--force")
    assert code == 0, err


def test_i23_2_onnx_without_its_packages_names_the_extra(run_dir, tmp_path):
    """Issue 23 snag 2: after the README's plain install (no onnx), ``vitkit export RUN --format onnx`` is
    one line naming the extra to install, exit 2. An ``onnx.py`` that fails to import, first on the
    subprocess's path, hides the installed package the way a missing one is missing."""
    hide = tmp_path / "hide_onnx"
    hide.mkdir()
    (hide / "onnx.py").write_text("raise ImportError(\"No module named 'onnx'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "vitkit", "export", str(run_dir), "--format", "onnx"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    line = 'vitkit: error: --format onnx needs onnx and onnxscript, not installed: pip install "vitkit[onnx]"'
    assert done.stderr.splitlines() == [line]  # onnxscript imports onnx, so it is missing too
    assert not list(run_dir.rglob("*.onnx"))
