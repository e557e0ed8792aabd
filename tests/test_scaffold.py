"""``vitkit new-plugin``: the package it writes installs, passes its own test and trains by name."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, TINY_DIGITS
from .test_plugin_runs import fresh, vitkit_cli


@pytest.mark.slow
def test_scaffolded_plugin_installs_tests_and_trains(tmp_path, cli):
    attention = f"scaffolded_{uuid.uuid4().hex[:6]}"  # a name no other test registers
    code, out, err = cli("new-plugin", tmp_path / "vitkit-my-attn", "--attention", attention)
    assert code == 0, err
    package = tmp_path / "vitkit-my-attn"
    assert {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} == {
        "pyproject.toml",
        "README.md",
        "vitkit_my_attn/__init__.py",
        "tests/test_vitkit_my_attn.py",
    }
    assert f'{attention} = "vitkit_my_attn"' in (package / "pyproject.toml").read_text()
    assert f"check_attention({attention!r})".replace("'", '"') in (package / "tests/test_vitkit_my_attn.py").read_text()

    site = tmp_path / "site"  # installed where only these subprocesses look, entry points included
    fresh(["-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site, package])
    assert (site / "vitkit_my_attn-0.1.0.dist-info" / "entry_points.txt").is_file()

    done = fresh(["-m", "pytest", "-q", "-p", "no:cacheprovider", package / "tests"], cwd=tmp_path, path=[site])
    assert "1 passed" in done.stdout

    done = vitkit_cli("list", "attention", attention, cwd=tmp_path, path=[site])
    assert attention in done.stdout
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_DIGITS.replace("depth = 2", "depth = 1").replace("epochs = 2", "epochs = 1"))
    vitkit_cli(
        "run",
        recipe,
        "--set",
        f'model.attention="{attention}"',
        "--set",
        f'output.dir="{tmp_path}"',
        cwd=tmp_path,
        path=[site],
    )
    (run_dir,) = (tmp_path / "tiny").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["test_acc"] > 0.1
    # installed in tmp only: the venv running the tests does not see it
    assert attention not in [ep.name for ep in importlib.metadata.entry_points(group="vitkit")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not a name!"], "is not a package name"),
        (["vitkit-ok", "--attention", "bad-name"], "is not an identifier"),
    ],
)
def test_new_plugin_rejects_bad_names(args, message, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("new-plugin", *args)
    assert code == 2 and message in err and not list(tmp_path.iterdir())


def test_new_plugin_does_not_overwrite(cli, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    code, _, err = cli("new-plugin", tmp_path / "taken")
    assert code == 2 and "already exists and is not empty" in err
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def _tutorial_command(start: str) -> str:
    """The first line of docs/plugins.md (a command of its tutorial) that starts with ``start``."""
    return re.search(rf"^{re.escape(start)}.*$", (ROOT / "docs" / "plugins.md").read_text(), re.M)[0]


@pytest.mark.slow
def test_i23_3_the_tutorials_pytest_runs_before_the_plugin_is_installed(tmp_path):
    """Issue 23 snag 3: the tutorial's ``vitkit new-plugin ...`` then ``cd vitkit-sigmoid-attention && pytest``,
    run verbatim in a shell, pass: the plugin is not installed yet, so the scaffold's pytest settings put
    its folder on the path."""
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),  # vitkit, pytest
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),  # this vitkit
    }
    for command in (_tutorial_command("vitkit new-plugin "), _tutorial_command("cd vitkit-sigmoid-attention && ")):
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {(done.stdout + done.stderr)[-3000:]}"
    assert "1 passed" in done.stdout
    assert "vitkit_sigmoid_attention" not in [ep.value for ep in importlib.metadata.entry_points(group="vitkit")]
