"""control/statistics.py: rolling percentiles, the time per round, throttled warnings."""
import pytest

from paradigms_policy.control.statistics import RollingStats, RoundTimeEstimator, Throttle, percentiles


def test_rolling_stats_and_percentiles():
    stats = RollingStats(size=100)
    for value in range(1, 101):
        stats.add(value / 1000.0)
    assert stats.p50() == pytest.approx(0.0505)
    assert stats.p99() == pytest.approx(0.09901)
    assert stats.max() == 0.1 and stats.count == 100 and stats.mean() == pytest.approx(0.0505)
    stats.add(1.0)  # the oldest sample leaves the window
    assert len(stats) == 100 and stats.count == 101 and min(stats.values()) == 0.002
    assert RollingStats().p50() is None
    assert percentiles([1.0, 2.0, 3.0]) == [2.0, pytest.approx(2.98)]
    assert percentiles([]) == [None, None]


def test_round_time_estimator_and_throttle():
    estimator = RoundTimeEstimator(size=3)
    assert estimator.estimate() is None
    estimator.add(0.5, 10)
    estimator.add(0.5, 0)  # no round: nothing measured
    assert estimator.estimate() == pytest.approx(0.05)
    throttle = Throttle(1.0)
    assert throttle.allow("a", 0) and not throttle.allow("a", 10) and throttle.allow("b", 10)
    assert throttle.allow("a", 10**9)


def test_a_skipped_chunk_relaxes_the_round_time_estimate():
    estimator = RoundTimeEstimator(10)
    for latency in (0.013, 0.015, 0.008, 0.0995):
        estimator.add(latency, 1)
    slow = estimator.estimate()
    estimator.forget_slowest()
    assert estimator.estimate() < slow
    for _ in range(3):
        estimator.forget_slowest()
    assert estimator.estimate() is None  # no estimate: the next chunk runs uncapped and measures again
