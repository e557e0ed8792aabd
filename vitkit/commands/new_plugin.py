"""``vitkit new-plugin NAME``: write an installable plugin package with an attention to start from."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vitkit.commands import Command
from vitkit.errors import UserError

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A vitkit plugin: the attention '{attention}'."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["vitkit>=0.1"]

[project.optional-dependencies]
test = ["pytest"]

# vitkit imports this module at start-up; importing it registers the attention.
[project.entry-points.vitkit]
{attention} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
pythonpath = ["."]  # `pytest` here imports {module} from this folder, installed or not
testpaths = ["tests"]
"""

MODULE = '''\
"""{dist}: a vitkit plugin that registers the attention ``{attention}``.

vitkit imports this module at start-up (the ``vitkit`` entry point in pyproject.toml), which
registers the attention; it has no other effect. ``vitkit.Attention`` owns the qkv projection,
the heads, q/k norm, dropouts and the output projection: override ``scores(q, k)`` (the weights;
``attention_map`` comes with it) or ``attend(q, k, v)`` (a kernel that never forms them).
"""

import torch

import vitkit


@vitkit.register_attention("{attention}")
class {cls}(vitkit.Attention):
    """{cls}: softmax attention, to start from (this first line is what `vitkit list attention` shows)."""

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The (B, heads, N, N) weights from queries and keys of shape (B, heads, N, head_dim)."""
        return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
'''

TEST = '''\
"""The checks vitkit runs on every attention: shapes, gradients, torch.compile, state dict,
attention_map rows, eval determinism and one training step on digits."""

from vitkit.testing import check_attention

import {module}  # noqa: F401  (registers the attention, installed or not)


def test_{attention}_follows_the_attention_contract():
    check_attention("{attention}")  # rows="nonnegative" if its weights are not a softmax
'''

README = """\
# {dist}

A vitkit plugin: the attention `{attention}` (`{module}/__init__.py`).

```
pip install -e .                 # vitkit finds it through the `vitkit` entry point
pytest                           # vitkit.testing.check_attention on it
vitkit plugins                   # {attention} | entry point {attention} = {module} | attention: {attention}
vitkit run recipes/digits.toml --set model.attention={attention} --set train.epochs=2
vitkit compare recipes/compare_attention_digits.toml --vary model.attention=softmax,{attention}
```

Edit `scores(q, k)` in `{module}/__init__.py` to try your idea, or override `attend(q, k, v)`
for a kernel that never forms the N x N weights (see vitkit's docs/plugins.md).
"""


def _identifier(text: str) -> str:
    return re.sub(r"\W+", "_", text.lower()).strip("_")


def new_plugin(path: str | Path, attention: str | None = None) -> Path:
    """Write the plugin package ``path`` (its folder name is the distribution name); returns the folder.

    ``attention`` is the registered name (default: the package name as an identifier, without a
    ``vitkit`` prefix).
    """
    root = Path(path)
    dist = root.name
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", dist):
        raise UserError(f"new-plugin: {dist!r} is not a package name (letters, digits, '-', '_', '.')")
    module = _identifier(dist)
    attention = attention or re.sub(r"^vitkit_", "", module)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", attention):
        raise UserError(f"new-plugin: --attention {attention!r} is not an identifier (letters, digits, '_')")
    if root.exists() and any(root.iterdir()):
        raise UserError(f"new-plugin: {str(root)!r} already exists and is not empty")
    cls = "".join(part.capitalize() for part in attention.split("_") if part)
    cls = cls if cls.endswith("Attention") else f"{cls}Attention"
    values = {"dist": dist, "module": module, "attention": attention, "cls": cls}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{module}/__init__.py": MODULE,
        f"tests/test_{module}.py": TEST,
    }
    for name, template in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.format(**values))
    return root


def add_arguments(np_: argparse.ArgumentParser) -> None:
    np_.add_argument("name", help="package folder to create (its name is the distribution name)")
    np_.add_argument("--attention", metavar="NAME", help="registered attention name (default: from the package name)")


def main(args: argparse.Namespace) -> int:
    root = new_plugin(args.name, args.attention)
    print(f"wrote {root}/: pyproject.toml, README.md, the module and a test; next: pip install -e {root}")
    return 0


COMMANDS = (
    Command(
        "new-plugin",
        "write an installable plugin package with an attention to start from",
        add_arguments,
        main,
        plugin_flags=False,
    ),
)
