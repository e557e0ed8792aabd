"""The README's install: a CPU-only line beside the default one, and extras for what is optional."""

import re

import tomllib

from .conftest import ROOT

CPU_TORCH = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"


def _quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Quickstart") : text.index("\n## ", text.index("## Quickstart") + 1)]


def _blocks(text: str) -> list[list[str]]:
    return [block.strip().splitlines() for block in re.findall(r"```\n(.*?)```", text, re.S)]


def test_i23_1_readme_gives_the_cpu_only_install_beside_the_default():
    """Issue 23 snag 1: on a CPU-only Linux machine the plain install pulled PyTorch's CUDA build; the
    README's quickstart gives PyTorch's CPU wheel index (as its selector prints it) before vitkit's own
    install, next to the default line, and says when to use which."""
    section = _quickstart()
    blocks = _blocks(section)
    default = ["pip install -e . && vitkit run recipes/digits.toml"]
    assert default in blocks  # the default line, alone
    assert [CPU_TORCH, *default] in blocks  # CPU-only torch first, then the same install
    prose = " ".join(section.split())
    assert "without an NVIDIA GPU" in prose and "CUDA" in prose


def test_i23_2_every_extra_is_in_all_and_the_readme_names_onnx():
    """Issue 23 snag 2: onnx is an extra of its own, ``[all]`` holds every user-facing extra, ``[dev]``
    (CI's install) still brings onnx for the export tests."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["onnx"] == ["onnx>=1.16", "onnxscript>=0.2"]
    (everything,) = extras["all"]
    assert set(re.fullmatch(r"vitkit\[(.*)\]", everything)[1].split(",")) == set(extras) - {"all", "dev"}
    assert "vitkit[onnx]" in extras["dev"]
    assert 'pip install -e ".[onnx]"' in _quickstart()
