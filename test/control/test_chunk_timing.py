"""Unit tests of the ROS-free node logic in paradigms_policy.chunk_timing (no rclpy needed)."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from paradigms_policy.control.timing import (NS_PER_MS, auto_round_cap, combine_caps, deadline_met, first_due_index, period_ns, plan_chunk, should_start_inference)
from paradigms_policy.control.parameters import (POLICY_NODE_PARAMETERS, SIM_NODE_PARAMETERS, spec_defaults, validate_against_policy, validate_policy_parameters, validate_sim_parameters)
from paradigms_policy.control.observations import ObservationGate, ObservationWindow
from paradigms_policy.control.statistics import RollingStats, RoundTimeEstimator, Throttle
from paradigms_policy.control.playback import TrajectorySchedule

REPO_ROOT = Path(__file__).resolve().parents[2]
P = 100 * NS_PER_MS  # 10 Hz
S = 1_700_000_000 * 10**9  # an observation stamp


def test_period_ns():
    assert period_ns(10.0) == P
    with pytest.raises(ValueError):
        period_ns(0.0)


def test_first_due_index():
    assert first_due_index(S, S, P) == 0
    assert first_due_index(S, S + 1, P) == 1
    assert first_due_index(S, S + P, P) == 1
    assert first_due_index(S, S + P + 1, P) == 2
    assert first_due_index(S, S - 5, P) == 0


def test_plan_chunk_drops_outdated_actions_and_times_the_rest():
    actions = np.arange(16, dtype=np.float64).reshape(8, 2) * 100.0 - 50.0
    chunk = plan_chunk(actions, S, S + 230 * NS_PER_MS, P, low=[0.0, 0.0], high=[512.0, 512.0])
    assert chunk.first_index == 3 and chunk.dropped == 3 and len(chunk) == 5
    assert chunk.start_ns == S + 3 * P  # header.stamp: when the first kept action applies
    assert chunk.times_from_start_ns() == [0, P, 2 * P, 3 * P, 4 * P]
    assert chunk.end_ns == S + 7 * P
    np.testing.assert_array_equal(chunk.positions, np.clip(actions[3:], 0.0, 512.0))
    assert chunk.clipped == int(np.count_nonzero((actions[3:] < 0) | (actions[3:] > 512)))


def test_plan_chunk_none_when_every_action_is_outdated():
    assert plan_chunk(np.zeros((8, 2)), S, S + 8 * P, P) is None
    assert plan_chunk(np.zeros((8, 2)), S, S + 7 * P, P) is not None


def test_deadline_and_replanning_rules():
    assert deadline_met(S, S + 500 * NS_PER_MS, 500 * NS_PER_MS)
    assert not deadline_met(S, S + 500 * NS_PER_MS + 1, 500 * NS_PER_MS)
    assert should_start_inference(S, None, P, 50 * NS_PER_MS)
    end = S + 7 * P
    assert not should_start_inference(S + 5 * P, end, P, 50 * NS_PER_MS)  # next observation is still in time
    assert should_start_inference(S + 6 * P, end, P, 50 * NS_PER_MS)  # waiting would leave a gap
    # On a lockstep simulation's clock inference takes no time: plan when the chunk has run out.
    assert not should_start_inference(S + 7 * P, end, P, 0, plan_ahead_periods=0)
    assert should_start_inference(S + 8 * P, end, P, 0, plan_ahead_periods=0)
    assert should_start_inference(S + 8 * P, end, P, -P, plan_ahead_periods=0)  # clock behind the observation


def test_round_caps():
    deadline = 500 * NS_PER_MS
    assert auto_round_cap(400 * NS_PER_MS, None, deadline) is None
    # 400 ms left, 50 ms margin (10% of the deadline), 35 ms per round -> 10 rounds
    assert auto_round_cap(400 * NS_PER_MS, 0.035, deadline) == 10
    assert auto_round_cap(40 * NS_PER_MS, 0.035, deadline) == 0
    assert combine_caps(None, None) is None
    assert combine_caps(8, None, 5) == 5


def test_statistics():
    stats = RollingStats(size=100)
    for value in range(1, 101):
        stats.add(value / 1000.0)
    assert stats.p50() == pytest.approx(0.0505)
    assert stats.p99() == pytest.approx(0.09901)
    assert stats.max() == 0.1 and stats.count == 100
    assert RollingStats().p50() is None
    estimator = RoundTimeEstimator(size=3)
    assert estimator.estimate() is None
    estimator.add(0.5, 10)
    assert estimator.estimate() == pytest.approx(0.05)
    throttle = Throttle(1.0)
    assert throttle.allow("a", 0) and not throttle.allow("a", 10) and throttle.allow("b", 10)
    assert throttle.allow("a", 10**9)


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


def test_parameter_validation_messages():
    values = spec_defaults(POLICY_NODE_PARAMETERS)
    assert validate_policy_parameters(values, ["sequential", "paradigms"]) == []
    bad = dict(values, sampler="fast", device="gpu", window=0, joint_names=["x", "x"], action_min=[1.0, 600.0])
    problems = validate_policy_parameters(bad, ["sequential", "paradigms"])
    assert any("window must be >= 1" in p for p in problems)
    bad = dict(values, sampler="fast", device="gpu", joint_names=["x", "x"], action_min=[1.0, 600.0])
    text = "; ".join(validate_policy_parameters(bad, ["sequential", "paradigms"]))
    for fragment in ("sampler must be one of sequential, paradigms (got 'fast')", "device must be",
                     "joint_names must be unique", "action_min must be below action_max"):
        assert fragment in text
    assert "control_rate must be of type float" in validate_policy_parameters(dict(values, control_rate="x"))[0]
    assert validate_against_policy(values, action_dim=2, horizon=16, n_obs_steps=2, checkpoint_n_action_steps=8) == []
    problems = validate_against_policy(dict(values, joint_names=["a"], n_action_steps=20), 2, 16, 2, 8)
    assert any("joint_names has 1 entries" in p for p in problems)
    assert any("n_action_steps 20 exceeds" in p for p in problems)
    problems = validate_against_policy(dict(values, deadline_ms=700.0), 2, 16, 2, 8)
    assert problems and "deadline_ms 700 must be below" in problems[0]
    assert validate_sim_parameters(spec_defaults(SIM_NODE_PARAMETERS)) == []
    too_long = dict(spec_defaults(SIM_NODE_PARAMETERS), max_steps=301)
    assert "max_steps must be <= 300" in validate_sim_parameters(too_long)[0]


@pytest.mark.parametrize("file_name, node_name, specs", [
    ("policy.yaml", "policy_node", POLICY_NODE_PARAMETERS),
    ("pusht_sim.yaml", "pusht_sim_node", SIM_NODE_PARAMETERS),
])
def test_config_files_match_declared_defaults(file_name, node_name, specs):
    document = yaml.safe_load((REPO_ROOT / "config" / file_name).read_text())
    values = document[node_name]["ros__parameters"]
    defaults = spec_defaults(specs)
    assert values == defaults
    for name, value in values.items():  # same ROS parameter type (a YAML 10 would be an integer)
        assert type(value) is type(defaults[name]), name


def test_cpu_overlay_sets_only_declared_parameters_with_valid_values():
    overlay = yaml.safe_load((REPO_ROOT / "config" / "policy_cpu.yaml").read_text())["policy_node"]["ros__parameters"]
    defaults = spec_defaults(POLICY_NODE_PARAMETERS)
    assert overlay and set(overlay) <= set(defaults)
    for name, value in overlay.items():
        assert type(value) is type(defaults[name]), name
    assert validate_policy_parameters({**defaults, **overlay}, ["sequential", "paradigms"]) == []


def test_lockstep_overlay_sets_declared_parameters_of_both_nodes():
    overlay = yaml.safe_load((REPO_ROOT / "config" / "lockstep.yaml").read_text())
    policy, sim = overlay["policy_node"]["ros__parameters"], overlay["pusht_sim_node"]["ros__parameters"]
    policy_defaults = dict(spec_defaults(POLICY_NODE_PARAMETERS), use_sim_time=False)  # rclpy declares use_sim_time
    sim_defaults = spec_defaults(SIM_NODE_PARAMETERS)
    assert policy == {"use_sim_time": True, "plan_ahead_periods": 0, "auto_round_cap": False}
    assert sim == {"lockstep": True}
    for values, defaults in ((policy, policy_defaults), (sim, sim_defaults)):
        for name, value in values.items():
            assert type(value) is type(defaults[name]), name
    assert validate_sim_parameters({**sim_defaults, **sim}) == []


def test_trajectory_schedule_replaces_from_the_new_start_and_holds_the_last_point():
    schedule = TrajectorySchedule()
    schedule.insert([S + k * P for k in range(1, 8)], [[k, k] for k in range(1, 8)])
    assert schedule.command_at(S, P) == (None, False)
    action, fresh = schedule.command_at(S + P + 3 * NS_PER_MS, P)  # timer jitter
    assert fresh and list(action) == [1, 1]
    action, fresh = schedule.command_at(S + 2 * P - 10 * NS_PER_MS, P)  # early tick: within half a period
    assert fresh and list(action) == [2, 2]
    schedule.insert([S + k * P for k in range(4, 6)], [[40, 40], [50, 50]])  # replaces points 4.. of the old one
    assert list(schedule.command_at(S + 3 * P, P)[0]) == [3, 3]
    assert list(schedule.command_at(S + 4 * P, P)[0]) == [40, 40]
    assert list(schedule.command_at(S + 5 * P, P)[0]) == [50, 50]
    action, fresh = schedule.command_at(S + 7 * P, P)  # ran out: hold the last point
    assert list(action) == [50, 50] and not fresh
    with pytest.raises(ValueError):
        schedule.insert([S, S], [[0, 0], [1, 1]])


def test_a_skipped_chunk_relaxes_the_round_time_estimate():
    from paradigms_policy.control.statistics import RoundTimeEstimator

    estimator = RoundTimeEstimator(10)
    for latency in (0.013, 0.015, 0.008, 0.0995):
        estimator.add(latency, 1)
    slow = estimator.estimate()
    estimator.forget_slowest()
    assert estimator.estimate() < slow
    for _ in range(3):
        estimator.forget_slowest()
    assert estimator.estimate() is None  # no estimate: the next chunk runs uncapped and measures again
