"""A run trained with a plugin attention (trained once, in this process) works everywhere, each command
in a fresh process with no extra flag: predict, export, compare RUN_DIR, eval, vitkit.load and create_model; entry-point
plugins are found by name from Python; the register_model example of docs/plugins.md trains."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import ROOT, TINY_DIGITS

MY_ATTENTION = ROOT / "plugins" / "my_attention.py"


def fresh(argv, cwd=None, check=True, path=()):
    """``python ARGV`` in a fresh process (nothing imported or registered beforehand); vitkit and
    ``path`` go first on its PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=env)
    if check:
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


def vitkit_cli(*args, cwd=None, check=True, path=()):
    return fresh(["-m", "vitkit", *args], cwd, check, path)


def python(code, cwd=None):
    return fresh(["-c", code], cwd).stdout


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    """One epoch of tiny digits with ``--plugin plugins/my_attention.py``, trained in this process: the
    commands below, each in a fresh process, are what must find the plugin."""
    from vitkit.cli import main

    out = tmp_path_factory.mktemp("plugin_runs")
    recipe = out / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("epochs = 2", "epochs = 1"))
    args = ["run", recipe, "--plugin", MY_ATTENTION, "--set", "model.attention=relu", "--set", f'output.dir="{out}"']
    assert main([str(a) for a in args]) == 0
    (run_dir,) = (out / "tiny").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    from PIL import Image
    from sklearn.datasets import load_digits

    path = tmp_path_factory.mktemp("images") / "digit.png"
    Image.fromarray((load_digits().images[0] * 15).astype("uint8")).save(path)
    return path


def test_the_saved_recipe_names_the_cli_plugin(relu_run):
    text = (relu_run / "recipe.toml").read_text()
    assert str(MY_ATTENTION.resolve()) in text and 'attention = "relu"' in text
    summary = json.loads((relu_run / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["test_acc"] > 0.1  # the relu attention trained


def test_predict_finds_the_plugin(relu_run, digit_png, tmp_path):
    done = vitkit_cli("predict", relu_run, digit_png, "--json", tmp_path / "p.json", cwd=tmp_path)
    (row,) = json.loads((tmp_path / "p.json").read_text())["results"]
    assert row["label"] in [str(d) for d in range(10)] and "digit.png" in done.stdout


def test_export_and_predict_from_the_exported_file(relu_run, digit_png, tmp_path):
    out = tmp_path / "relu.safetensors"
    vitkit_cli("export", relu_run, "--out", out, cwd=tmp_path)
    assert out.is_file()
    done = vitkit_cli("predict", out, digit_png, cwd=tmp_path)  # the file carries the plugin list too
    assert "digit.png" in done.stdout


def test_compare_a_run_dir_finds_the_plugin(relu_run, tmp_path):
    vitkit_cli("compare", relu_run, "--out", tmp_path / "cmp", cwd=tmp_path)
    (row,) = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert row["params"] > 0 and row["infer_img_per_s"] > 0


def test_vitkit_load_and_create_model_from_the_checkpoint(relu_run, digit_png, tmp_path):
    code = f"""
import vitkit
pred = vitkit.load({str(relu_run)!r})
print(type(pred.model.blocks[0].attn).__name__, pred.predict([{str(digit_png)!r}])[0].label)
model = vitkit.create_model("vit_nano_patch4_16", checkpoint_path={str(relu_run / "checkpoints" / "best.pt")!r})
print(type(model.blocks[0].attn).__name__)
"""
    out = python(code, cwd=tmp_path).split()
    assert out[0] == "ReluAttention" and out[1] in [str(d) for d in range(10)] and out[2] == "ReluAttention"


@pytest.mark.skipif(
    "gated" not in [ep.name for ep in importlib.metadata.entry_points(group="vitkit")],
    reason="plugins/vitkit-gated-attention not installed",
)
def test_create_model_finds_an_installed_attention_by_name(tmp_path):
    code = """
import vitkit
model = vitkit.create_model("vit_nano_patch4_16", depth=1, attention="gated")
print(type(model.blocks[0].attn).__name__, vitkit.ATTENTION.get("gated").origin)
"""
    assert python(code, cwd=tmp_path).split() == ["GatedAttention", "gated"]
    done = vitkit_cli(
        "run",
        ROOT / "recipes" / "digits.toml",
        "--dry-run",
        "--set",
        'model.attention="gated"',
        "--no-plugins",
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2 and "unknown attention 'gated'" in done.stderr  # --no-plugins still holds


def docs_example(heading_regex: str) -> str:
    """The first python block after a heading of docs/plugins.md."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = re.search(heading_regex, text).end()
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_register_model_example_from_the_docs_trains(tmp_path, cli):
    plugin = tmp_path / "pico.py"
    plugin.write_text("import vitkit\n\n" + docs_example(r"## Registering components"))
    recipe = tmp_path / "pico.toml"
    recipe.write_text(
        TINY_DIGITS.replace('name = "vit_nano_patch4_16"\ndepth = 2', 'name = "vit_pico_patch4_16"').replace(
            "epochs = 2", "epochs = 1"
        )
    )
    code, _, err = cli("run", recipe, "--plugin", plugin, "--set", f'output.dir="{tmp_path}"')
    assert code == 0, err
    (run_dir,) = (tmp_path / "tiny").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["epochs_run"] == 1
