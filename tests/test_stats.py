"""vitkit.stats against SciPy (test-only dependency) and against the issue's worked example."""

import math

import pytest

from vitkit import stats

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy (the dev extra) checks the statistics")

COSINE = [0.9889, 0.9610, 0.9721]  # test accuracy at seeds 0, 1, 2 (issue 13)
SOFTMAX = [0.9499, 0.9443, 0.9694]


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 200])
@pytest.mark.parametrize("t", [-7.5, -2.0, -0.3, 0.0, 0.4, 1.96, 3.1, 12.0])
def test_t_distribution_matches_scipy(t, df):
    assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-11)
    assert stats.t_sf2(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), abs=1e-11)


@pytest.mark.parametrize("df", [1, 2, 4, 10, 100])
@pytest.mark.parametrize("q", [0.025, 0.1, 0.5, 0.9, 0.975, 0.995])
def test_t_quantiles_match_scipy(q, df):
    assert stats.t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9, abs=1e-9)


def test_known_quantiles():
    assert stats.t_ppf(0.975, 2) == pytest.approx(4.302652729911275, rel=1e-10)  # textbook table
    assert stats.t_ppf(0.975, 1e6) == pytest.approx(1.959963984540054, rel=1e-5)  # the normal's 1.96


def test_describe_matches_scipy_interval():
    values = [0.9805, 0.9916, 0.9833, 0.9861]
    summary = stats.describe(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=summary.mean, scale=scipy_stats.sem(values))
    assert summary.n == 4
    assert summary.mean == pytest.approx(sum(values) / 4)
    assert summary.sd == pytest.approx(scipy_stats.tstd(values))
    assert (summary.low, summary.high) == (pytest.approx(low), pytest.approx(high))
    one = stats.describe([0.5])
    assert one.mean == 0.5 and math.isnan(one.sd) and math.isnan(one.low)


@pytest.mark.parametrize(
    "a, b",
    [(COSINE, SOFTMAX), ([1.0, 2.0, 3.0, 4.0, 5.0], [1.1, 1.7, 3.5, 3.0, 4.2]), ([0.7, 0.71], [0.69, 0.65])],
)
def test_paired_t_matches_scipy_ttest_rel(a, b):
    ours = stats.paired_t(a, b)
    theirs = scipy_stats.ttest_rel(a, b)
    assert ours.t == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.df == len(a) - 1
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    low, high = scipy_stats.t.interval(0.95, len(a) - 1, loc=ours.diff, scale=scipy_stats.sem(diffs))
    assert ours.half_width == pytest.approx((high - low) / 2)


def test_issue_example_is_within_noise():
    test = stats.paired_t(COSINE, SOFTMAX)
    assert test.diff == pytest.approx(0.0195, abs=1e-4)  # +3.9, +1.7, +0.3 points
    assert 0.15 < test.p < 0.25  # "p ≈ 0.2"
    line = stats.verdict("cosine", "softmax", COSINE, SOFTMAX)
    assert line == f"cosine and softmax are within noise here (p = {test.p:.2f}); run more seeds"


def test_verdict_when_the_difference_is_real():
    a, b = [0.95, 0.96, 0.955, 0.962, 0.958], [0.90, 0.905, 0.91, 0.903, 0.899]
    test = stats.paired_t(a, b)
    assert test.p < 0.001
    assert stats.verdict("A", "B", a, b) == (
        f"A beats B by {100 * test.diff:.1f} ± {100 * test.half_width:.1f} points (p < 0.001)"
    )
    assert "cannot tell" in stats.verdict("A", "B", [0.9, 0.9], [0.9, 0.9])  # identical: no spread, no test
    assert "no test possible" in stats.verdict("A", "B", [0.9], [0.8])
    with pytest.raises(ValueError):
        stats.paired_t([1.0, 2.0], [1.0])


def test_i22_6_equal_paired_differences_are_no_test():
    """Three seeds each better by exactly one of 400 images printed "A beats B by 0.3 ± 0.0 points (p < 0.001)"."""
    a, b = [0.9775, 0.9525, 0.9650], [0.9750, 0.9500, 0.9625]  # as floats, the differences vary by ~1e-17
    assert stats.verdict("A", "B", a, b) == (
        "A vs B: cannot tell; the 3 paired differences are all equal (+0.25 points), so the test has no spread "
        "to judge them by; run more seeds"
    )
    test = stats.paired_t(a, b)
    assert test.equal and math.isnan(test.p) and test.diff == pytest.approx(0.0025)
    assert "cannot tell" in stats.verdict("A", "B", [0.9, 0.8], [0.9, 0.8], repeats="folds")  # identical runs
    assert not stats.paired_t([0.9775, 0.9525, 0.9650], [0.9750, 0.9500, 0.9600]).equal  # one image more: a test


def test_i22_6_accuracy_interval_is_the_t_interval_of_logits():
    """Two runs at 0.80 and 0.95: the raw t interval is [-0.08, 1.83]; on the logit scale it stays in [0, 1]."""
    xs = [0.80, 0.95]
    raw = stats.describe(xs)
    assert raw.low < 0.0 and raw.high > 1.0
    summary = stats.describe_accuracy(xs, [400, 400])
    logits = [math.log(x / (1 - x)) for x in xs]
    low, high = scipy_stats.t.interval(0.95, 1, loc=sum(logits) / 2, scale=scipy_stats.sem(logits))
    assert (summary.low, summary.high) == (
        pytest.approx(1 / (1 + math.exp(-low))),
        pytest.approx(1 / (1 + math.exp(-high))),
    )
    assert 0.0 < summary.low < summary.mean < summary.high < 1.0 and summary.mean == pytest.approx(0.875)
    assert summary.sd == pytest.approx(raw.sd)
    perfect = stats.describe_accuracy([0.99, 1.0, 1.0], [200, 200, 200])  # 1.0 counts as half an image from 1
    half = 1.0 - 0.5 / 200
    logits = [math.log(0.99 / 0.01), math.log(half / (1 - half)), math.log(half / (1 - half))]
    low, high = scipy_stats.t.interval(0.95, 2, loc=sum(logits) / 3, scale=scipy_stats.sem(logits))
    assert (perfect.low, perfect.high) == (
        pytest.approx(1 / (1 + math.exp(-low))),
        pytest.approx(1 / (1 + math.exp(-high))),
    )
    assert perfect.high < 1.0
    same = stats.describe_accuracy([0.9, 0.9])
    assert (same.low, same.high) == (0.9, 0.9)
