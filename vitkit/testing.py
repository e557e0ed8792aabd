"""Checks for component authors: ``check_attention`` runs an attention through vitkit's contract.

Call it from your plugin's tests (``vitkit new-plugin`` writes one)::

    from vitkit.testing import check_attention

    def test_my_attention():
        check_attention("mine")                     # a registered name, a spec dict or the class

Each check raises ``AssertionError`` with a message naming the attention and what failed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from vitkit.registry import ATTENTION, split_spec

Rows = Literal["softmax", "nonnegative", "any"]


def _factory(attention: Any, options: dict[str, Any]) -> tuple[str, Callable[..., nn.Module]]:
    """(a name for messages, a factory taking the contract's keywords) for a name, spec or class."""
    if isinstance(attention, (str, dict)):
        name, spec_options = split_spec(attention)
        return name, partial(ATTENTION.get(name).factory, **{**spec_options, **options})
    if callable(attention):
        return getattr(attention, "__name__", repr(attention)), partial(attention, **options)
    raise TypeError(f"check_attention takes a registered name, a spec dict or a class, got {attention!r}")


def _build(factory: Callable[..., nn.Module], dim: int, num_heads: int, seed: int, **extra: Any) -> nn.Module:
    torch.manual_seed(seed)
    return factory(dim=dim, num_heads=num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, **extra)


def check_attention(
    attention: str | dict[str, Any] | Callable[..., nn.Module],
    *,
    options: dict[str, Any] | None = None,
    dim: int = 32,
    num_heads: int = 4,
    token_counts: Sequence[int] = (1, 5, 17),
    rows: Rows = "softmax",
    compile: bool | str = True,
    train_step: bool = True,
) -> list[str]:
    """Run ``attention`` (a registered name, a ``{"name": ..., **options}`` spec or a class) through
    the attention contract; returns the names of the checks that passed, raises ``AssertionError``.

    The checks:

    - ``signature``: it is built from ``dim, num_heads, qkv_bias, attn_drop, proj_drop`` and an
      unknown extra keyword (so it takes ``**kwargs``), with your ``options``;
    - ``shapes``: ``(B, N, dim) -> (B, N, dim)``, finite, in the input's dtype (float32 and
      float64), for every N in ``token_counts`` (1 included: a lone token must work);
    - ``gradients``: every parameter and the input get a finite, non-zero gradient;
    - ``state_dict``: a second instance loading the first one's state dict (strictly) gives the
      same output;
    - ``eval_deterministic``: two forward passes in ``eval()`` give identical outputs;
    - ``batch_independent``: in ``eval()`` (no dropout), in float64, each sample's output is the
      one it gets alone (``f(x)[i:i+1] == f(x[i:i+1])``): attention mixes the tokens of one image,
      never the images of a batch;
    - ``attention_map`` (when it has one): ``(B, heads, N, N)``, finite, with rows as ``rows``
      says: ``"softmax"`` (default) non-negative and summing to 1, ``"nonnegative"`` (ReLU or
      sigmoid attention, say), or ``"any"``. On a ``vitkit.Attention`` variant, the map must
      also be what ``attend`` applies to the values;
    - ``compile``: ``torch.compile`` (``True``: the default backend, inductor; a string: that
      backend) gives the eager output; ``False`` skips it (inductor is slow on a small CPU);
    - ``train_step``: a one-block ViT with this attention, one AdamW step on a batch of
      scikit-learn's digits (no download) lowers the loss on that batch. ``False`` skips it.
    """
    name, factory = _factory(attention, dict(options or {}))
    fail = f"attention {name!r}"
    passed = []

    module = _build(factory, dim, num_heads, 0, a_future_option=1)
    assert isinstance(module, nn.Module), f"{fail}: built a {type(module).__name__}, not an nn.Module"
    module = _build(factory, dim, num_heads, 0)
    passed.append("signature")

    module.eval()
    with torch.no_grad():
        for dtype in (torch.float32, torch.float64):
            module.to(dtype)
            for n in token_counts:
                x = torch.randn(2, n, dim, dtype=dtype)
                y = module(x)
                assert y.shape == x.shape, f"{fail}: input {tuple(x.shape)} gave output {tuple(y.shape)}"
                assert y.dtype == dtype, f"{fail}: {dtype} input gave a {y.dtype} output"
                assert torch.isfinite(y).all(), f"{fail}: non-finite output for N={n} ({dtype})"
        module.float()
    passed.append("shapes")

    module.train()
    x = torch.randn(3, max(token_counts), dim, requires_grad=True)
    (module(x) * torch.randn(3, max(token_counts), dim)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0, f"{fail}: no gradient reaches the input"
    for pname, param in module.named_parameters():
        grad = param.grad
        assert grad is not None, f"{fail}: no gradient reaches parameter {pname!r}"
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"{fail}: zero or non-finite grad on {pname!r}"
    module.zero_grad(set_to_none=True)
    passed.append("gradients")

    module.eval()
    x = torch.randn(2, max(token_counts), dim)
    with torch.no_grad():
        y = module(x)
        assert torch.equal(module(x), y), f"{fail}: two forward passes in eval() differ"
        twin = _build(factory, dim, num_heads, 1).eval()
        twin.load_state_dict(module.state_dict())
        torch.testing.assert_close(twin(x), y, msg=lambda m: f"{fail}: a state-dict copy differs: {m}")
        passed += ["state_dict", "eval_deterministic"]
        _check_batch_independent(module, x, fail)
        passed.append("batch_independent")
        if callable(getattr(module, "attention_map", None)):
            _check_map(module, x, rows, fail)
            passed.append("attention_map")

    if compile:
        backend = compile if isinstance(compile, str) else "inductor"
        torch._dynamo.reset()
        compiled = torch.compile(module, backend=backend)
        with torch.no_grad():
            out = compiled(x)
        torch.testing.assert_close(out, y, atol=1e-4, rtol=1e-4, msg=lambda m: f"{fail}: compiled output: {m}")
        passed.append("compile")

    if train_step:
        _check_train_step(factory, dim, num_heads, fail)
        passed.append("train_step")
    return passed


def _check_batch_independent(module: nn.Module, x: torch.Tensor, fail: str) -> None:
    """Each sample's output, in a batch, equals its output alone (float64, so kernels' rounding is far below
    the tolerance; what the module was is restored)."""
    module.double()
    try:
        x = x.double()
        together = module(x)
        for i in range(len(x)):
            torch.testing.assert_close(
                together[i : i + 1],
                module(x[i : i + 1]),
                msg=lambda m, i=i: (
                    f"{fail}: the output for sample {i} of a batch differs from its output alone (f(x)[{i}:{i + 1}] "
                    f"!= f(x[{i}:{i + 1}])): it mixes the samples of a batch, where it must mix only the tokens of "
                    f"each: {m}"
                ),
            )
    finally:
        module.float()


def _check_map(module: nn.Module, x: torch.Tensor, rows: Rows, fail: str) -> None:
    """Shape, finiteness and rows of ``attention_map``; on the base class, that ``attend`` uses it."""
    from vitkit.layers.attention.base import Attention

    b, n, _ = x.shape
    weights = module.attention_map(x)
    heads = getattr(module, "num_heads", weights.shape[1])
    assert weights.shape == (b, heads, n, n), f"{fail}: attention_map gave {tuple(weights.shape)}, not (B, H, N, N)"
    assert torch.isfinite(weights).all(), f"{fail}: attention_map has non-finite weights"
    if rows != "any":
        assert (weights >= 0).all(), f"{fail}: attention_map has negative weights (pass rows='any' if intended)"
    if rows == "softmax":
        sums = weights.sum(dim=-1)
        torch.testing.assert_close(
            sums,
            torch.ones_like(sums),
            msg=lambda m: f"{fail}: attention_map rows do not sum to 1 (pass rows='nonnegative' if intended): {m}",
        )
    elif rows not in ("nonnegative", "any"):
        raise ValueError(f"rows must be 'softmax', 'nonnegative' or 'any', got {rows!r}")
    if isinstance(module, Attention):
        q, k, v = module.heads(x)
        torch.testing.assert_close(
            module.attend(q, k, v),
            module.scores(q, k) @ v,
            atol=1e-5,
            rtol=1e-4,
            msg=lambda m: (
                f"{fail}: attend(q, k, v) is not scores(q, k) @ v, so attention_map is not what it applies: {m}"
            ),
        )


def _check_train_step(factory: Callable[..., nn.Module], dim: int, num_heads: int, fail: str) -> None:
    """One AdamW step of a one-block digits ViT built with this attention lowers the batch loss."""
    from sklearn.datasets import load_digits

    from vitkit.models.vit import VisionTransformer

    digits = load_digits()
    images = torch.tensor(digits.images[:256], dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target[:256], dtype=torch.long)
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=8,
        patch_size=2,
        in_chans=1,
        num_classes=10,
        embed_dim=dim,
        depth=1,
        num_heads=num_heads,
        class_token=False,
        global_pool="avg",
        pos_embed="sincos",
        attention=factory,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    before = loss_fn(model(images), labels)
    assert torch.isfinite(before), f"{fail}: the digits loss is not finite"
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss_fn(model(images), labels)
    assert after < before, f"{fail}: one training step on digits did not lower the loss ({before:.4f} -> {after:.4f})"


STALL_AT = "VITKIT_TEST_STALL_AT"


def stall_at_test_point(where: str, epoch: int = 0, step: int = 0, rank: int = 0) -> None:
    """Test hook for vitkit's own tests: ``VITKIT_TEST_STALL_AT="step:EPOCH:STEP:RANK"`` blocks rank ``RANK``
    for good before training step ``STEP`` (1-based) of epoch ``EPOCH``; ``"worker:RANK"`` blocks its
    training DataLoader workers as they start. A stuck rank or loader made on purpose (never by timing):
    the tests check that the run then fails within ``train.wait_timeout`` with one line."""
    spec = os.environ.get(STALL_AT, "").split(":")
    if spec[0] != where:
        return
    if where == "step" and tuple(map(int, spec[1:])) != (epoch, step, rank):
        return
    if where == "worker" and int(spec[1]) != rank:
        return
    threading.Event().wait()  # until the process is ended


def stall_worker_hook(rank: int) -> Callable[[int], None] | None:
    """A DataLoader ``worker_init_fn`` for ``"worker:RANK"`` (``stall_at_test_point``), or ``None``."""
    if not os.environ.get(STALL_AT, "").startswith("worker:"):
        return None
    return partial(_stall_worker, rank)


def _stall_worker(rank: int, worker: int) -> None:
    stall_at_test_point("worker", rank=rank)


__all__ = ["check_attention"]
