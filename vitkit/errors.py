"""The one user-error type: the CLI prints it as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a recipe, a command line or an input file; never a bug in vitkit."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and how to resume (the CLI exits 130)."""
