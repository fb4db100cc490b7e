"""control/observations.py: the checks of incoming observations and the observation window."""
import numpy as np

from paradigms_policy.control.observations import ObservationGate, ObservationWindow
from paradigms_policy.control.timing import NS_PER_MS

P = 100 * NS_PER_MS
S = 1_700_000_000 * 10**9


def test_observation_gate_reasons():
    gate = ObservationGate(obs_dim=3, max_age_ns=200 * NS_PER_MS)
    now = S + 10 * NS_PER_MS
    assert gate.check([1, 2], S, now).reason == "wrong_length"
    assert gate.check([1, np.nan, 2], S, now).reason == "non_finite"
    assert gate.check([1, np.inf, 2], S, now).reason == "non_finite"
    assert gate.check([1, 2, 3], 0, now).reason == "no_stamp"
    assert gate.check([1, 2, 3], now - 300 * NS_PER_MS, now).reason == "stale"
    assert gate.check([1, 2, 3], now + 300 * NS_PER_MS, now).reason == "future"
    assert gate.check([1, 2, 3], S, now).accepted
    assert gate.check([1, 2, 3], S, now).reason == "out_of_order"  # duplicate
    assert gate.check([1, 2, 3], S - 1, now).reason == "out_of_order"
    assert gate.check([1, 2, 3], S + 1, now).accepted
    # Unstamped: no age or order check.
    unstamped = ObservationGate(obs_dim=3, max_age_ns=200 * NS_PER_MS, stamped=False)
    assert unstamped.check([1, 2, 3], 0, now).accepted and unstamped.check([1, 2, 3], 0, now).accepted


def test_observation_window_needs_contiguous_stamps():
    window = ObservationWindow(n_obs_steps=2, obs_dim=3)
    window.push([1, 1, 1], S)
    assert window.snapshot(150 * NS_PER_MS) is None
    window.push([2, 2, 2], S + P)
    values, stamp = window.snapshot(150 * NS_PER_MS)
    assert stamp == S + P and values.shape == (2, 3) and values[1, 0] == 2
    window.push([3, 3, 3], S + 5 * P)  # after a gap (e.g. an episode reset)
    assert window.snapshot(150 * NS_PER_MS) is None
    assert window.sequence == 3
