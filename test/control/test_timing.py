"""control/timing.py: which actions of a chunk are due, deadlines, when to plan, round caps."""
import numpy as np
import pytest

from paradigms_policy.control.timing import (NS_PER_MS, RoundPlan, auto_round_cap, combine_caps, deadline_met,
                                             first_due_index, period_ns, plan_chunk, plan_rounds,
                                             should_start_inference)

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
    last_only = plan_chunk(np.zeros((8, 2)), S, S + 7 * P, P)
    assert last_only.first_index == 7 and len(last_only) == 1


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


def test_plan_rounds_caps_parallel_samplers_and_skips_when_no_round_fits():
    deadline = 500 * NS_PER_MS
    # auto cap (10 rounds fit) below a fixed cap of 12, above a fixed cap of 4
    assert plan_rounds(True, 12, True, 400 * NS_PER_MS, 0.035, deadline) == RoundPlan(10)
    assert plan_rounds(True, 4, True, 400 * NS_PER_MS, 0.035, deadline) == RoundPlan(4)
    assert plan_rounds(True, 0, False, 400 * NS_PER_MS, 0.035, deadline) == RoundPlan(None)
    assert plan_rounds(True, 0, True, 400 * NS_PER_MS, None, deadline) == RoundPlan(None)  # nothing measured yet
    skipped = plan_rounds(True, 0, True, 40 * NS_PER_MS, 0.035, deadline)
    assert skipped.cap is None and skipped.skip.startswith("only 40.0 ms left")
    assert plan_rounds(True, 0, True, -NS_PER_MS, None, deadline).skip  # the deadline has passed
    # The sequential sampler runs uncapped, and is skipped only once the deadline has passed.
    assert plan_rounds(False, 3, True, 40 * NS_PER_MS, 0.035, deadline) == RoundPlan(None)
    assert plan_rounds(False, 0, True, 0, 0.035, deadline).skip == "the deadline passed before the inference could start"
