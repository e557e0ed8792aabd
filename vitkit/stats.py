"""Small statistics for comparisons over repeats (seeds or folds), on ``scipy.stats``.

- ``describe(xs)``: n, mean, sample standard deviation and the 95% Student-t interval of the mean.
- ``describe_accuracy(xs, sizes)``: the same for accuracies, with an interval that stays inside
  [0, 1]: the Student-t interval of the mean *logit* accuracy, mapped back.
- ``paired_t(a, b)``: the paired t-test of matched repeats (same seed or fold for ``a[i]`` and
  ``b[i]``): mean difference, its 95% interval half-width, t, degrees of freedom, two-sided p
  (``nan`` when the differences are all equal: without their spread there is no test).
- ``verdict(...)``: one sentence, "A beats B by x ± y points (p = ...)" when p < ``alpha``,
  "A and B are within noise here (p = ...); run more seeds" otherwise, and "cannot tell" when
  the paired differences are all equal.

Student's t comes from ``scipy.stats`` (``t.ppf`` for the intervals, ``ttest_rel`` for the paired
test); SciPy ships with every vitkit through scikit-learn, and is imported only when a function runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05
#: paired differences whose sd is below this fraction of the values' size are all equal (float rounding)
EQUAL_RTOL = 1e-9


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean."""
    if not xs:
        raise ValueError("mean of no values")
    return math.fsum(xs) / len(xs)


def sd(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); ``nan`` for fewer than 2 values."""
    if len(xs) < 2:
        return math.nan
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (SciPy, imported when needed)."""
    from scipy.stats import t

    return float(t.ppf(q, df))


@dataclass
class Summary:
    """n values summarised: mean, sample sd, the 95% t interval of the mean (``nan`` for n < 2)."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


def describe(xs: Sequence[float], level: float = 0.95) -> Summary:
    """Mean, sample sd and the ``level`` Student-t confidence interval of the mean of ``xs``."""
    m, s, n = mean(xs), sd(xs), len(xs)
    if n < 2:
        return Summary(n, m, math.nan, math.nan, math.nan)
    half = _t_quantile(0.5 + level / 2.0, n - 1) * s / math.sqrt(n)
    return Summary(n, m, s, m - half, m + half)


def logit(p: float) -> float:
    """log(p / (1 - p)) for 0 < p < 1."""
    return math.log(p) - math.log1p(-p)


def expit(x: float) -> float:
    """The inverse of ``logit``: 1 / (1 + exp(-x)), without overflow."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


#: an accuracy of exactly 0 or 1 with no known image count counts as this far from the bound
UNKNOWN_SIZE_EPS = 1e-4


def describe_accuracy(xs: Sequence[float], sizes: Sequence[int | None] | None = None, level: float = 0.95) -> Summary:
    """Mean and sample sd of accuracies (fractions), and a ``level`` interval inside [0, 1].

    The interval is Student's t on the logit scale: the t interval of the mean of
    ``logit(x_i)``, mapped back with ``expit``. It is asymmetric near 1 and never leaves [0, 1]
    (a t interval of the raw accuracies does, e.g. [0.47, 1.22] from two runs). ``sizes[i]`` is
    the number of images behind ``xs[i]``: an accuracy of exactly 0 or 1 is taken as half an
    image from the bound (``UNKNOWN_SIZE_EPS`` when the size is unknown), so its logit is finite.
    Runs that all score the same give the zero-width interval [mean, mean], as the t interval does.
    """
    if any(not 0.0 <= x <= 1.0 for x in xs):
        raise ValueError(f"describe_accuracy: accuracies must lie in [0, 1], got {list(xs)}")
    m, s, n = mean(xs), sd(xs), len(xs)
    if n < 2:
        return Summary(n, m, math.nan, math.nan, math.nan)
    if s == 0.0:
        return Summary(n, m, 0.0, m, m)
    sizes = list(sizes) if sizes is not None else [None] * n
    logits = []
    for x, size in zip(xs, sizes, strict=True):
        eps = 0.5 / size if size else UNKNOWN_SIZE_EPS
        logits.append(logit(min(max(x, eps), 1.0 - eps)))
    centre = mean(logits)
    half = _t_quantile(0.5 + level / 2.0, n - 1) * sd(logits) / math.sqrt(n)
    return Summary(n, m, s, expit(centre - half), expit(centre + half))


@dataclass
class PairedTest:
    """A paired t-test of ``a - b``: mean difference, 95% interval half-width, t, df, two-sided p.

    ``t`` and ``p`` are ``nan`` when every pair differs by the same amount (``equal``): the test
    estimates the noise from the spread of the differences, and there is none to estimate from."""

    n: int
    diff: float
    half_width: float
    t: float
    df: int
    p: float

    @property
    def equal(self) -> bool:
        """Every pair differs by exactly the same amount (all identical included): no test possible."""
        return math.isnan(self.p)


def paired_t(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> PairedTest:
    """Paired t-test of matched values (``a[i]`` and ``b[i]`` share a seed or fold); needs n >= 2."""
    if len(a) != len(b):
        raise ValueError(f"paired_t: {len(a)} values against {len(b)}; pairs must match")
    if len(a) < 2:
        raise ValueError("paired_t: needs at least 2 pairs")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n, d, s = len(diffs), mean(diffs), sd(diffs)
    df = n - 1
    # every pair differs by the same amount (up to float rounding: 0.9775 - 0.975 != 0.9525 - 0.95):
    # no spread to judge the difference by
    if s <= EQUAL_RTOL * max(abs(v) for v in (*a, *b)):
        return PairedTest(n, d, 0.0, math.nan, df, math.nan)
    from scipy.stats import ttest_rel

    test = ttest_rel(a, b)
    half = _t_quantile(0.5 + level / 2.0, df) * s / math.sqrt(n)
    return PairedTest(n, d, half, float(test.statistic), df, float(test.pvalue))


def format_p(p: float) -> str:
    """``p = 0.032``, ``p = 0.21``, ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def verdict(
    best: str,
    other: str,
    a: Sequence[float],
    b: Sequence[float],
    points: bool = True,
    repeats: str = "seeds",
    alpha: float = ALPHA,
) -> str:
    """The best variant against another, over matched repeats: a margin with its interval, noise,
    or "cannot tell" when the paired differences are all equal (no spread, so no test).

    ``points``: values are fractions (accuracies), reported in percentage points; the margin's
    interval is then kept inside [-100, 100] points (a difference of accuracies cannot leave it).
    """
    scale, unit = (100.0, " points") if points else (1.0, "")
    if len(a) < 2:
        diff = scale * (a[0] - b[0])
        return f"{best} leads {other} by {diff:.1f}{unit} on one run each: no test possible; run more {repeats}"
    test = paired_t(a, b)
    if test.equal:
        return (
            f"{best} vs {other}: cannot tell; the {test.n} paired differences are all equal "
            f"({scale * test.diff:+.2f}{unit}), so the test has no spread to judge them by; run more {repeats}"
        )
    p = format_p(test.p)
    if test.p < alpha and test.diff > 0:
        margin, half = scale * test.diff, scale * test.half_width
        if points and margin + half > scale:  # the t interval passes +100 points: show it bounded
            return f"{best} beats {other} by {margin:.1f}{unit} [{margin - half:.1f}, {scale:.1f}] ({p})"
        return f"{best} beats {other} by {margin:.1f} ± {half:.1f}{unit} ({p})"
    return f"{best} and {other} are within noise here ({p}); run more {repeats}"
