"""control/diagnostics.py: the level and message of each /diagnostics report."""
from paradigms_policy.control.diagnostics import ERROR, OK, WARN, DiagnosticsReporter, format_value


def stats(misses=0, rejected=0, errors=0, **more):
    return dict(deadline_misses=misses, observations_rejected=rejected, inference_errors=errors, **more)


def test_the_level_follows_what_changed_since_the_last_report():
    reporter = DiagnosticsReporter()
    first = reporter.report(stats(latency_p50_ms=12.3456, window="whole chain", tolerance=None))
    assert (first.level, first.message) == (OK, "ok")
    assert first.values == [("deadline_misses", "0"), ("observations_rejected", "0"), ("inference_errors", "0"),
                            ("latency_p50_ms", "12.346"), ("window", "whole chain"), ("tolerance", "n/a")]
    warned = reporter.report(stats(misses=2, rejected=1))
    assert (warned.level, warned.message) == (WARN, "2 deadline miss(es), 1 rejected observation(s) since the last report")
    assert reporter.report(stats(misses=2, rejected=1)).level == OK  # nothing new
    failed = reporter.report(stats(misses=3, rejected=1, errors=1))  # errors outrank misses
    assert (failed.level, failed.message) == (ERROR, "1 inference error(s)")


def test_format_value():
    assert [format_value(v) for v in (None, 0.5, 3, "parataa", True)] == ["n/a", "0.500", "3", "parataa", "True"]
