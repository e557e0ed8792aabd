"""The errors the CLI prints as one line: user errors (exit 2), Ctrl-C (130) and a lost peer process (1)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a recipe, a command line or an input file; never a bug in vitkit."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept and how to resume (the CLI exits 130)."""


class PeerLost(RuntimeError):
    """Another process of a multi-process run is gone (killed, crashed, its machine lost). The CLI prints
    one line and exits 1; ``torchrun --max-restarts`` then restarts the group, which resumes the run."""


class WaitTimedOut(PeerLost):
    """A process of a run waited ``train.wait_timeout`` seconds in a collective (another rank is stuck or
    far behind) or for a batch from its DataLoader workers. One line naming the rank and what it waited
    for, exit 1, as for a lost peer (``torchrun`` then stops the other ranks, or restarts the group)."""
