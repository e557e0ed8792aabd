"""The bad-input corpus: every broken recipe (tests/corpus/recipes/) and command line (tests/corpus/cli.toml)
ends with exit code 2 and one line on stderr that names the file, key or argument; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from .conftest import RECIPES, ROOT

CORPUS = Path(__file__).parent / "corpus"
RECIPE_CASES = sorted((CORPUS / "recipes").glob("*.toml"))
CLI_CASES = tomllib.loads((CORPUS / "cli.toml").read_text())["case"]


def _header(path: Path) -> dict[str, str]:
    """``# key: value`` lines at the top of a corpus recipe."""
    head = {}
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        head[key] = value
    return head


def _assert_one_line_error(code: int, err: str, expect: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("vitkit"), err
    assert expect in err, err


def test_corpus_is_large_enough():
    assert len(RECIPE_CASES) + len(CLI_CASES) >= 30
    assert all("expect" in _header(path) for path in RECIPE_CASES)


@pytest.fixture
def corpus_dir(tmp_path):
    """The corpus recipes copied to tmp_path/corpus with ``{tmp}`` filled in; ``a_file`` is a regular file."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for path in RECIPE_CASES:
        (folder / path.name).write_bytes(path.read_bytes().replace(b"{tmp}", str(tmp_path).encode()))
    (tmp_path / "a_file").write_text("not a folder\n")
    return folder


@pytest.mark.parametrize("case", RECIPE_CASES, ids=[p.stem for p in RECIPE_CASES])
def test_broken_recipe(cli, corpus_dir, tmp_path, case):
    path = corpus_dir / case.name
    head = _header(case)
    args = ["run", path] if head.get("mode") == "run" else ["run", path, "--dry-run"]
    code, _, err = cli(*args)
    _assert_one_line_error(code, err, head["expect"].replace("{tmp}", str(tmp_path)))
    if "extends_broken_parent" not in case.name:
        assert f"{path}:" in err  # names the file


def _setup(kind: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.pt"
    state = {"model": {"w": torch.zeros(2)}, "recipe": {"name": "x"}}
    if kind == "finished_run":
        torch.save(state, last)
        (run / "summary.json").write_text("{}\n")
    elif kind == "corrupt_run":
        last.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif kind == "truncated_run":
        torch.save(state, last)
        last.write_bytes(last.read_bytes()[:200])
    elif kind == "weights_only_run":
        torch.save(state, last)
    elif kind == "no_recipe_run":
        keys = ("model", "optimizer", "scheduler", "scaler", "epoch", "history", "rng")
        torch.save({key: {} for key in keys}, last)
    elif kind != "empty_run":
        raise ValueError(kind)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c["name"] for c in CLI_CASES])
def test_broken_command_line(cli, tmp_path, case):
    if "setup" in case:
        _setup(case["setup"], tmp_path)

    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{recipe}", str(RECIPES / "digits.toml"))

    code, _, err = cli(*[fill(a) for a in case["args"]])
    _assert_one_line_error(code, err, fill(case["expect"]))


def test_debug_env_shows_the_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochz = 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "vitkit", "run", str(bad), "--dry-run"]
    plain = subprocess.run(command, capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert (
        plain.stderr.strip() == f"vitkit: error: {bad}: unknown key 'train.epochz' in [train] (did you mean 'epochs'?)"
    )
    debug = subprocess.run(command, capture_output=True, text=True, env={**env, "VITKIT_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "vitkit.errors.UserError" in debug.stderr and "epochz" in debug.stderr
