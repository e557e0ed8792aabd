"""Commands declare themselves (``vitkit.commands.Command``); ``cli.py`` only dispatches. An installed package
adds a command through an entry point in group ``vitkit.commands`` without touching vitkit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vitkit.commands import BUILTIN, Command, builtin_commands

ROOT = Path(__file__).resolve().parents[1]

HELLO = """
import argparse

from vitkit.commands import Command
from vitkit.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("who", help="whom to greet")
    parser.add_argument("--times", type=int, default=1, help="how often")


def main(args: argparse.Namespace) -> int:
    if args.who == "nobody":
        raise UserError("hello: nobody to greet")
    print(" ".join(["hello", args.who] * args.times), "plugins:", args.plugins)
    return 3


COMMAND = Command("hello", "greet someone (a plugin's command)", add_arguments, main)
TAKEN = Command("run", "a plugin's run", add_arguments, main)
"""


def install_fake_distribution(where: Path, entry_points: str) -> dict[str, str]:
    """A distribution as pip leaves it (module + ``.dist-info`` with ``entry_points.txt``) on a path of its
    own; returns the environment that puts it on ``sys.path``."""
    (where / "hello_cmd.py").write_text(HELLO)
    info = where / "vitkit_hello-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vitkit-hello\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}


def vitkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitkit", *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_plugin_adds_a_command_without_editing_the_cli(tmp_path: Path) -> None:
    env = install_fake_distribution(tmp_path, "[vitkit.commands]\nhello = hello_cmd:COMMAND\n")
    top = vitkit(env, "--help")
    assert top.returncode == 0 and "hello" in top.stdout and "greet someone (a plugin's command)" in top.stdout
    own = vitkit(env, "hello", "--help")
    assert own.returncode == 0 and "whom to greet" in own.stdout and "--no-plugins" in own.stdout
    ran = vitkit(env, "hello", "world", "--times", "2", "--plugin", "x.py")
    assert ran.returncode == 3, ran.stderr  # its own exit code
    assert ran.stdout.strip() == "hello world hello world plugins: ['x.py']"
    bad = vitkit(env, "hello", "nobody")  # a user error in a plugin command: one line, exit 2, like every command
    assert bad.returncode == 2 and bad.stderr.strip() == "vitkit: error: hello: nobody to greet"
    wrong = vitkit(env, "hello")  # argparse's errors too
    assert (
        wrong.returncode == 2
        and wrong.stderr.count("\n") == 1
        and "the following arguments are required: who" in (wrong.stderr)
    )


def test_a_broken_plugin_command_is_one_warning_and_the_rest_still_works(tmp_path: Path) -> None:
    env = install_fake_distribution(
        tmp_path,
        "[vitkit.commands]\nbroken = hello_cmd:MISSING\nclash = hello_cmd:TAKEN\nnotacommand = hello_cmd:main\n",
    )
    result = vitkit(env, "runs", str(tmp_path))
    assert result.returncode == 0 and "no runs under" in result.stdout, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 3 and all(line.startswith("vitkit: warning: ") for line in warnings)
    assert "'broken'" in warnings[0] and "failed to load" in warnings[0]
    assert "declares command 'run', taken; skipped" in warnings[1]  # vitkit's own run stays
    assert "is not a vitkit.commands.Command" in warnings[2]
    assert "RECIPE_OR_DIR" in vitkit(env, "run", "--help").stdout


def test_every_builtin_command_declares_itself_and_cli_holds_no_arguments() -> None:
    commands = builtin_commands()
    names = [c.name for c in commands]
    assert len(names) == len(set(names)) >= 17 and all(isinstance(c, Command) for c in commands)
    assert len(BUILTIN) < len(names)  # export/push and list/plugins share a module
    cli = (ROOT / "vitkit" / "cli.py").read_text()
    assert "add_argument(" not in cli and "add_argument_group" not in cli
