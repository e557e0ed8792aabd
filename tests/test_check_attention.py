"""vitkit.testing.check_attention on the built-ins and both example plugins, and on broken attentions
it must reject; the Attention base class's own contract; the ReLU example's size."""

import ast
import importlib.metadata

import pytest
import torch
from torch import nn

import vitkit
from vitkit.layers.attention import Attention, SoftmaxAttention
from vitkit.testing import check_attention

from .conftest import ROOT

MY_ATTENTION = ROOT / "plugins" / "my_attention.py"
vitkit.load_plugins(extra=[str(MY_ATTENTION)])
BUILTIN = ["cosine", "linear", "lsa", "softmax", "talking_heads"]
ALL_CHECKS = [
    "signature", "shapes", "gradients", "state_dict", "eval_deterministic", "batch_independent", "attention_map",
    "train_step",
]  # fmt: skip


@pytest.mark.parametrize("name", BUILTIN)
def test_builtins_pass_check_attention(name):
    passed = check_attention(name, compile=False)
    expected = [c for c in ALL_CHECKS if name != "linear" or c != "attention_map"]  # linear forms no map
    assert passed == expected


def test_relu_example_plugin_passes_with_nonnegative_rows():
    assert check_attention("relu", rows="nonnegative", compile=False) == ALL_CHECKS
    with pytest.raises(AssertionError, match="rows do not sum to 1"):  # relu(...)/N is not a distribution
        check_attention("relu", compile=False, train_step=False)


@pytest.mark.skipif(
    "gated" not in [ep.name for ep in importlib.metadata.entry_points(group="vitkit")],
    reason="plugins/vitkit-gated-attention not installed",
)
def test_gated_example_plugin_passes():
    vitkit.load_plugins()
    assert check_attention("gated", compile=False) == ALL_CHECKS


@pytest.mark.slow
def test_check_attention_compiles_with_the_default_backend():
    """The default (inductor) compile, as plugin authors run it, on the single-file example."""
    relu = vitkit.ATTENTION.get("relu").factory  # the class, as an author passes it
    passed = check_attention(relu, rows="nonnegative", token_counts=(5,), train_step=False)
    assert passed[-1] == "compile"


def test_check_attention_compiles_with_a_named_backend():
    assert check_attention(SoftmaxAttention, compile="eager", train_step=False)[-1] == "compile"


class NoGradToBias(Attention):
    """Softmax weights, but a parameter the output never uses."""

    def __init__(self, dim, num_heads=8, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.unused = nn.Parameter(torch.zeros(3))

    def scores(self, q, k):
        return (q @ k.transpose(-2, -1) * self.scale).softmax(-1)


class AlwaysDropout(SoftmaxAttention):
    """Dropout even in eval: not deterministic."""

    def forward(self, x):
        return nn.functional.dropout(super().forward(x), 0.5, training=True)


class MapNotApplied(SoftmaxAttention):
    """attention_map (scores) disagrees with what attend applies."""

    def scores(self, q, k):
        return super().scores(q, k).flip(-1)


class MixesTheBatch(SoftmaxAttention):
    """Adds the batch mean: each image's output depends on the other images of its batch."""

    def forward(self, x):
        return super().forward(x + x.mean(dim=0, keepdim=True))


class WithDropout(SoftmaxAttention):
    """Softmax attention whose dropouts are always on in training."""

    def __init__(self, dim, num_heads=8, **kwargs):
        super().__init__(dim, num_heads, **{**kwargs, "attn_drop": 0.5, "proj_drop": 0.5})


class NoKwargs(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(x)


class WrongShape(SoftmaxAttention):
    def forward(self, x):
        return super().forward(x)[:, :1]


@pytest.mark.parametrize(
    ("attention", "message"),
    [
        (NoGradToBias, "no gradient reaches parameter 'unused'"),
        (AlwaysDropout, r"two forward passes in eval\(\) differ"),
        (MapNotApplied, "attention_map is not what it applies"),
        (WrongShape, r"input \(2, 1, 32\) gave output|gave output \(2, 1, 32\)"),
    ],
)
def test_check_attention_rejects_broken_attentions(attention, message):
    with pytest.raises(AssertionError, match=message):
        check_attention(attention, compile=False, train_step=False)


def test_i22_10_check_attention_rejects_an_attention_that_mixes_the_batch():
    message = r"output for sample 0 of a batch differs from its output alone .* mixes the samples of a batch"
    with pytest.raises(AssertionError, match=message):
        check_attention(MixesTheBatch, compile=False, train_step=False)
    # dropout is off in the check (eval mode): a per-sample attention with dropout passes
    assert "batch_independent" in check_attention(WithDropout, compile=False, train_step=False)


def test_check_attention_requires_kwargs():
    with pytest.raises(TypeError, match="a_future_option"):
        check_attention(NoKwargs, compile=False, train_step=False)


def test_base_class_needs_scores_or_attend_and_maps_only_with_scores():
    class Nothing(Attention):
        pass

    with pytest.raises(TypeError, match="must override scores"):
        Nothing(32, 4)
    linear = vitkit.ATTENTION.create("linear", dim=32, num_heads=4)
    assert isinstance(linear, Attention) and not hasattr(linear, "attention_map")
    relu = vitkit.ATTENTION.create("relu", dim=32, num_heads=4, qk_norm=True)
    assert isinstance(relu.q_norm, nn.LayerNorm)  # q/k norm comes with the base class
    assert relu.attention_map(torch.randn(2, 5, 32)).shape == (2, 4, 5, 5)


def code_lines(path) -> int:
    """Lines of code: not blank, not comments, not the module docstring."""
    text = path.read_text()
    doc = ast.parse(text).body[0]
    skip = set(range(doc.lineno, doc.end_lineno + 1)) if isinstance(doc, ast.Expr) else set()
    return sum(
        1
        for i, line in enumerate(text.splitlines(), 1)
        if i not in skip and line.strip() and not line.strip().startswith("#")
    )


def test_relu_example_is_at_most_fifteen_lines_of_code():
    assert code_lines(MY_ATTENTION) <= 15


def test_sigmoid_example_of_the_docs_passes():
    from .test_plugin_runs import docs_example

    source = docs_example(r"### 2\. .*").replace('"sigmoid"', '"docs_sigmoid"')
    exec(compile(source, "docs/plugins.md", "exec"), {})
    assert check_attention("docs_sigmoid", rows="nonnegative", compile=False) == ALL_CHECKS
