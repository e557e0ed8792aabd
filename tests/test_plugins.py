"""Plugin discovery (entry points, recipe paths, --plugin), lifecycle hooks, and broken plugins."""

import importlib.metadata
import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from types import SimpleNamespace

import pytest

from vitkit import ATTENTION

from .conftest import RECIPES, ROOT, TINY_DIGITS

ATTENTION_TEMPLATE = '''
import vitkit
from vitkit.layers.attention import SoftmaxAttention


@vitkit.register_attention("{name}")
class Custom(SoftmaxAttention):
    """A test attention."""
'''

HOOKS = """
import json
import math

import vitkit


def _log(run, event):
    with open(run.run_dir / "hooks.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")


@vitkit.hookimpl
def vitkit_on_run_start(run):
    _log(run, {"event": "start", "device": str(run.device), "model": type(run.model).__name__,
               "recipe": run.recipe.name})


@vitkit.hookimpl
def vitkit_on_epoch_end(run, epoch, metrics):
    _log(run, {"event": "epoch", "epoch": epoch, "metrics": metrics})


@vitkit.hookimpl
def vitkit_on_run_end(run, summary):
    _log(run, {"event": "end", "test_acc": summary["test_acc"]})
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: no wrapping of long paths


def uid() -> str:
    return uuid.uuid4().hex[:6]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_entry_point_discovery_through_importlib_metadata(tmp_path, monkeypatch, cli):
    tag = uid()
    module, attention, ep_name = f"vitkit_ep_{tag}", f"ep_attn_{tag}", f"ep{tag}"
    site = tmp_path / "site"
    write(site / module / "__init__.py", ATTENTION_TEMPLATE.format(name=attention) + HOOKS)
    dist = site / f"vitkit_ep_{tag}-1.0.dist-info"
    write(dist / "METADATA", f"Metadata-Version: 2.1\nName: vitkit-ep-{tag}\nVersion: 1.0\n")
    write(dist / "entry_points.txt", f"[vitkit]\n{ep_name} = {module}\n")
    monkeypatch.syspath_prepend(str(site))
    assert any(ep.name == ep_name for ep in importlib.metadata.entry_points(group="vitkit"))

    code, out, _ = cli("list", "attention", "--no-plugins")
    assert code == 0 and attention not in out and attention not in ATTENTION
    code, out, err = cli("plugins")
    assert code == 0, err
    assert f"entry point {ep_name} = {module} in vitkit-ep-{tag} 1.0" in out
    assert f"attention: {attention}" in out and "vitkit_on_epoch_end" in out
    assert ATTENTION.get(attention).origin == ep_name
    code, out, _ = cli("list", "attention", f"ep_attn_{tag}")
    assert code == 0 and attention in out and ep_name in out


def test_recipe_plugin_path_hooks_and_the_jsonl_logger_once_per_epoch(tmp_path, monkeypatch, cli):
    """One run, two hook plugins: a recipe's plugin path (hooks.jsonl) and the example JSONL logger given
    by module name with ``--plugin`` (enabled by VITKIT_JSONL; see test_jsonl_logger_example_is_opt_in)."""
    attention = f"rp_{uid()}"
    write(tmp_path / "my_plugins" / "hooky.py", ATTENTION_TEMPLATE.format(name=attention) + HOOKS)
    recipe = write(
        tmp_path / "recipes" / "r.toml",
        'plugins = ["../my_plugins/hooky.py"]\n' + TINY_DIGITS + f'[output]\ndir = "{tmp_path / "runs"}"\n',
    )
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "vitkit-jsonl-logger"))
    log = tmp_path / "logs" / "metrics.jsonl"
    monkeypatch.setenv("VITKIT_JSONL", str(log))
    code, _, err = cli("run", recipe, "--set", f"model.attention={attention}", "--plugin", "vitkit_jsonl_logger")
    assert code == 0, err
    assert ATTENTION.get(attention).origin == "hooky"
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    events = [json.loads(line) for line in (run_dir / "hooks.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "end"]
    assert events[0] == {"event": "start", "device": "cpu", "model": "VisionTransformer", "recipe": "tiny"}
    for epoch, event in enumerate(events[1:3], start=1):
        assert event["epoch"] == epoch
        for key in ("train_loss", "val_loss", "val_acc", "lr"):
            assert math.isfinite(event["metrics"][key])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert events[-1]["test_acc"] == summary["test_acc"]
    # the JSONL logger
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]  # once per epoch, even if also installed
    assert {"run", "run_dir", "train_loss", "val_loss", "val_acc", "lr"} <= set(lines[0])
    assert lines[0]["run"] == "tiny" and math.isfinite(lines[1]["val_loss"])


def test_cli_plugin_module_stops_training_early(tmp_path, monkeypatch, cli, write_recipe):
    module = f"stopper_{uid()}"
    write(
        tmp_path / "mods" / f"{module}.py",
        """
        import vitkit


        @vitkit.hookimpl
        def vitkit_on_epoch_end(run, epoch, metrics):
            if epoch == 1:
                run.request_stop("enough for a test")
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    recipe = write_recipe(TINY_DIGITS.replace("epochs = 2", "epochs = 4"))
    code, out, err = cli("run", recipe, "--plugin", module, "--set", f'output.dir="{tmp_path / "runs"}"')
    assert code == 0, err
    assert "stopping after epoch 1: enough for a test" in out
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["stop_reason"] == "enough for a test"


def test_cli_plugin_path_is_listed_with_its_components(tmp_path, cli):
    attention = f"cp_{uid()}"
    path = write(tmp_path / "cli_plugin.py", ATTENTION_TEMPLATE.format(name=attention))
    code, out, err = cli("plugins", "--plugin", path, "--no-plugins")
    assert code == 0, err
    assert "cli_plugin" in out and f"--plugin {path}" in out and f"attention: {attention}" in out
    code, out, _ = cli("plugins", "--plugin", path, "--plugin", path, "--no-plugins")  # loaded once
    assert code == 0 and out.count(f"attention: {attention}") == 1


def test_example_single_file_plugin_recipe(cli):
    code, out, err = cli("run", RECIPES / "digits_custom_attention.toml", "--dry-run")
    assert code == 0, err
    assert ATTENTION.get("relu").origin == "my_attention"
    code, out, _ = cli("plugins", RECIPES / "digits_custom_attention.toml", "--no-plugins")
    assert code == 0 and "my_attention" in out and "attention: relu" in out


BROKEN = {
    "import_error": ("import no_such_module_for_vitkit_tests\n", "ModuleNotFoundError: No module named"),
    "syntax_error": ("def broken(:\n    pass\n", "SyntaxError: "),
    "runtime_error": ("raise RuntimeError('plugin exploded')\n", "RuntimeError: plugin exploded"),
    "name_clash": (
        ATTENTION_TEMPLATE.format(name="softmax"),
        "attention 'softmax' is already registered by vitkit (pass override=True to replace it)",
    ),
    "misspelled_hook": (
        "import vitkit\n\n@vitkit.hookimpl\ndef vitkit_on_epoch_ned(run, epoch, metrics):\n    pass\n",
        "unknown hook 'vitkit_on_epoch_ned'",
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_plugin_is_one_line_naming_plugin_source_and_cause(kind, tmp_path, cli):
    text, cause = BROKEN[kind]
    path = write(tmp_path / f"broken_{kind}_{uid()}.py", text)
    code, out, err = cli("plugins", "--plugin", path, "--no-plugins")
    assert code == 2
    assert err.startswith(f"vitkit: error: plugin '{path.stem}' (--plugin {path})")
    assert cause in err and err.count("\n") == 1


def test_broken_recipe_plugin_stops_the_run(tmp_path, cli, write_recipe):
    write(tmp_path / "bad.py", "raise ImportError('needs a package you do not have')\n")
    recipe = write_recipe('plugins = ["bad.py"]\n' + TINY_DIGITS)
    code, _, err = cli("run", recipe, "--no-plugins")
    assert code == 2
    assert f"plugin 'bad' ({recipe}: plugins = {tmp_path / 'bad.py'}) failed to load" in err
    assert "ImportError: needs a package you do not have" in err


def test_missing_plugin_path_and_module(tmp_path, cli, write_recipe):
    code, _, err = cli("plugins", "--plugin", tmp_path / "nowhere.py", "--no-plugins")
    assert code == 2 and f"no such file '{tmp_path / 'nowhere.py'}'" in err
    recipe = write_recipe('plugins = ["missing.py"]\n' + TINY_DIGITS)
    code, _, err = cli("run", recipe, "--dry-run", "--no-plugins")
    assert code == 2 and f"{recipe}: plugins: 'missing.py' does not exist ({tmp_path / 'missing.py'})" in err
    code, _, err = cli("list", "attention", "--plugin", "no_such_plugin_module", "--no-plugins")
    assert code == 2 and "plugin 'no_such_plugin_module' (--plugin no_such_plugin_module)" in err
    assert "ModuleNotFoundError" in err


def test_two_plugins_with_one_name_clash(tmp_path, cli):
    first = write(tmp_path / "a" / "twin.py", ATTENTION_TEMPLATE.format(name=f"twin_a_{uid()}"))
    second = write(tmp_path / "b" / "twin.py", ATTENTION_TEMPLATE.format(name=f"twin_b_{uid()}"))
    code, _, err = cli("plugins", "--plugin", first, "--plugin", second, "--no-plugins")
    assert code == 2
    assert f"plugin 'twin' (--plugin {second}): the name is already taken by --plugin {first}" in err


def test_jsonl_logger_example_is_opt_in(tmp_path, monkeypatch):
    """Installed but not enabled (no VITKIT_JSONL): no effect. Enabled, it writes a line per epoch:
    test_recipe_plugin_path_hooks_and_the_jsonl_logger_once_per_epoch trains with it."""
    monkeypatch.syspath_prepend(str(ROOT / "plugins" / "vitkit-jsonl-logger"))
    import vitkit_jsonl_logger

    monkeypatch.delenv("VITKIT_JSONL", raising=False)
    idle_run = SimpleNamespace(recipe=SimpleNamespace(name="x"), run_dir=tmp_path / "idle")
    vitkit_jsonl_logger.vitkit_on_epoch_end(run=idle_run, epoch=1, metrics={"train_loss": 1.0})
    assert not (tmp_path / "idle").exists()  # installed but not enabled: no effect


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("vitkit-gated-attention"), reason="plugins/vitkit-gated-attention not installed")
def test_installed_example_plugin_trains_two_epochs(tmp_path, cli, write_recipe):
    recipe = write_recipe(TINY_DIGITS)
    code, _, err = cli("run", recipe, "--set", "model.attention=gated", "--set", f'output.dir="{tmp_path}"')
    assert code == 0, err
    assert ATTENTION.get("gated").origin == "gated"
    (run_dir,) = (tmp_path / "tiny").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and math.isfinite(summary["final_train_loss"])
    code, out, _ = cli("list", "attention", "gated")
    assert code == 0 and "gated" in out.split("│")[2]


@pytest.mark.skipif(not _installed("vitkit-gated-attention"), reason="plugins/vitkit-gated-attention not installed")
def test_i23_10_no_plugins_names_the_plugin_that_provides_the_name(tmp_path):
    """Issue 23 snag 10: ``vitkit run RECIPE --no-plugins`` with a recipe naming the installed plugin's
    attention says which plugin has it and that --no-plugins switched it off (it said only "unknown
    attention 'gated'"); the ``--plugin`` it suggests loads just that one."""
    recipe = tmp_path / "gated.toml"
    recipe.write_text(TINY_DIGITS.replace("depth = 2", 'depth = 2\nattention = "gated"'))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def vitkit(*args):
        return subprocess.run(
            [sys.executable, "-m", "vitkit", *args], capture_output=True, text=True, cwd=tmp_path, env=env
        )

    done = vitkit("run", str(recipe), "--no-plugins", "--set", f'output.dir="{tmp_path}"')
    assert done.returncode == 2 and not (tmp_path / "tiny").exists()
    assert done.stderr.splitlines() == [
        f"vitkit: error: {recipe}: model: unknown attention 'gated': it comes from the plugin 'gated' "
        f"(entry point gated = vitkit_gated_attention in vitkit-gated-attention "
        f"{importlib.metadata.version('vitkit-gated-attention')}), which --no-plugins switched off; "
        "run without --no-plugins, or load just that one with --plugin vitkit_gated_attention"
    ]
    done = vitkit("run", str(recipe), "--no-plugins", "--plugin", "vitkit_gated_attention", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "recipe valid" in done.stdout
