"""The ``vitkit`` command: a dispatcher over the commands' own declarations (``vitkit.commands``).

It builds the parser from each ``Command`` (built-in, then installed through entry points), runs the one
asked for, and turns user errors into one line with exit code 2. No command's arguments live here; heavy
imports (torch, timm, matplotlib) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Sequence

from vitkit.errors import PeerLost, UserError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other vitkit error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    from vitkit.commands import commands
    from vitkit.commands.common import add_plugin_flags

    parser = _Parser(
        prog="vitkit",
        description="Train, evaluate and use Vision Transformers from TOML recipes.",
        epilog="Set VITKIT_DEBUG=1 to see tracebacks of user errors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands():
        declared = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(declared)
        if command.plugin_flags:
            add_plugin_flags(declared)
        declared.set_defaults(main=command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; user errors print one line and return 2."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument (one line, code 2)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.main(args)
    except UserError as err:
        if os.environ.get("VITKIT_DEBUG"):
            raise
        print(f"vitkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"vitkit: {err or 'interrupted'}", file=sys.stderr)
        return 130
    except PeerLost as err:  # the surviving ranks of a multi-process run; torchrun may restart the group
        if os.environ.get("VITKIT_DEBUG"):
            raise
        print(f"vitkit: {err}", file=sys.stderr)
        return 1
    finally:
        from vitkit.plugin_loader import allow_entry_points

        allow_entry_points(True)  # --no-plugins held for this command; in-process callers start afresh
