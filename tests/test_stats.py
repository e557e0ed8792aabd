"""vitkit.stats on scipy.stats: the earlier hand-written results, SciPy's intervals, the issue's example."""

import math

import pytest
import scipy.stats as scipy_stats

from vitkit import stats

COSINE = [0.9889, 0.9610, 0.9721]  # test accuracy at seeds 0, 1, 2 (issue 13)
SOFTMAX = [0.9499, 0.9443, 0.9694]


#: paired_t of the hand-written Student's t that stats.py had before it moved onto scipy.stats
#: (a, b, diff, half_width, t, p): the move keeps every result to 1e-9
BEFORE_SCIPY_PAIRED = [
    (
        [0.9889, 0.961, 0.9721],
        [0.9499, 0.9443, 0.9694],
        0.019466666666666632,
        0.045478268189245614,
        1.8417215476174145,
        0.20685696659974223,
    ),
    (
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [1.1, 1.7, 3.5, 3.0, 4.2],
        0.29999999999999993,
        0.7704322497845011,
        1.0811249552346704,
        0.3404682243000704,
    ),
    ([0.7, 0.71], [0.69, 0.65], 0.034999999999999976, 0.3176551184042803, 1.400000000000001, 0.39486308657749253),
    (
        [0.95, 0.96, 0.955, 0.962, 0.958],
        [0.9, 0.905, 0.91, 0.903, 0.899],
        0.05359999999999994,
        0.007532306753396269,
        19.757222124756176,
        3.871387785832899e-05,
    ),
]
#: describe(xs): (xs, low, high) of the 95% interval, from the same earlier implementation
BEFORE_SCIPY_DESCRIBE = [
    ([0.9805, 0.9916, 0.9833, 0.9861], 0.9778356969363761, 0.9929143030636239),
    ([0.8, 0.95], -0.07796535521284176, 1.8279653552128416),
    ([0.5, 0.6, 0.7], 0.3515862288249634, 0.8484137711750366),
]


@pytest.mark.parametrize("a, b, diff, half_width, t, p", BEFORE_SCIPY_PAIRED)
def test_paired_t_on_scipy_equals_the_earlier_results(a, b, diff, half_width, t, p):
    test = stats.paired_t(a, b)
    assert (test.diff, test.half_width, test.t, test.p) == (
        pytest.approx(diff, rel=1e-9, abs=1e-12),
        pytest.approx(half_width, rel=1e-9),
        pytest.approx(t, rel=1e-9),
        pytest.approx(p, rel=1e-9),
    )


@pytest.mark.parametrize("xs, low, high", BEFORE_SCIPY_DESCRIBE)
def test_describe_on_scipy_equals_the_earlier_results(xs, low, high):
    summary = stats.describe(xs)
    assert (summary.low, summary.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_known_quantile_through_the_interval():
    """Two values: the 95% half-width is t(0.975, 1) * sd / sqrt(2), t(0.975, 1) = 12.706204736174707."""
    summary = stats.describe([0.0, 1.0])
    assert summary.high - summary.mean == pytest.approx(12.706204736174707 * math.sqrt(0.5) / math.sqrt(2), rel=1e-10)


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
