import pytest

from vitkit import ATTENTION, MODELS, Registry, UserError, register_model
from vitkit.errors import UnknownNameError


def test_register_create_list_and_docs():
    reg = Registry("widgets")

    @reg.register("box")
    def make_box(size=1):
        """A box of a size."""
        return ("box", size)

    @reg.register
    def ball():
        return "ball"

    assert reg.create("box", size=3) == ("box", 3)
    assert reg.create({"name": "box", "size": 2}) == ("box", 2)
    assert reg.create({"name": "box", "size": 2}, size=5) == ("box", 5)  # explicit kwargs win
    assert reg.create("box", size=None) == ("box", 1)  # None means "use the default", as in timm
    assert reg.list() == ["ball", "box"]
    assert reg.list("b?x") == ["box"]
    assert "box" in reg and "cube" not in reg
    assert reg.get("box").doc == "A box of a size."
    assert reg.get("box").origin == "vitkit"


def test_natural_sort():
    reg = Registry("things")
    for name in ("vit_10", "vit_2", "vit_1"):
        reg.add(name, object)
    assert reg.list("vit_*") == ["vit_1", "vit_2", "vit_10"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError) as info:
        ATTENTION.get("softmx")
    message = str(info.value)
    assert "unknown attention 'softmx'" in message
    assert "did you mean 'softmax'" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)


def test_duplicates_fail_unless_override():
    reg = Registry("things")
    reg.add("a", int)
    with pytest.raises(UserError, match="already registered"):
        reg.add("a", float)
    reg.add("a", float, override=True)
    assert reg.get("a").factory is float


def test_builtin_registries_are_populated():
    assert "vit_tiny_patch16_224" in MODELS.list("vit_*")
    assert "softmax" in ATTENTION


def test_public_decorator_registers_model():
    @register_model("test_only_model", override=True)
    def build(**kwargs):
        """A test model."""
        return "model"

    assert MODELS.create("test_only_model") == "model"
