"""Optional dependencies: which extra brings which package, and the one-line error when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from vitkit.errors import UserError


def require(extra: str, *modules: str, what: str | None = None) -> list[ModuleType]:
    """Import ``modules``; if any is missing, raise a one-line ``UserError`` naming ``pip install "vitkit[extra]"``.

    ``what`` names the feature that needs them (defaults to the extra's name).
    """
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f'{what or extra} needs {" and ".join(missing)}, not installed: pip install "vitkit[{extra}]"')
    return found
