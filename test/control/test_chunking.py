"""What the node commits for real-time chunking: the delay from the latency, the commands of the running trajectory."""
import numpy as np

from paradigms_policy.control.chunking import committed_actions, overlap_actions, planned_delay_steps
from paradigms_policy.control.timing import TimedChunk

PERIOD = 100


def test_delay_is_the_latency_in_periods_rounded_up_plus_the_margin_and_capped():
    assert planned_delay_steps(0, PERIOD, most=7) == 1
    assert planned_delay_steps(180, PERIOD, most=7) == 3  # 2 periods rounded up, + 1
    assert planned_delay_steps(200, PERIOD, most=7) == 3
    assert planned_delay_steps(5000, PERIOD, most=7) == 7


def test_committed_actions_are_the_running_commands_at_their_due_times():
    running = TimedChunk(start_ns=1000, period_ns=PERIOD, positions=np.arange(10.0).reshape(5, 2), first_index=1,
                         dropped=1)
    assert committed_actions(None, 1200, PERIOD, 2) is None
    # Due at 1100 (just before the stamp), 1200 and 1300: points 1, 2 and 3.
    np.testing.assert_array_equal(committed_actions(running, 1200, PERIOD, 2), [[2, 3], [4, 5], [6, 7]])
    # Past its end the last point is held; before its start its first point stands in.
    np.testing.assert_array_equal(committed_actions(running, 1400, PERIOD, 2), [[6, 7], [8, 9], [8, 9]])
    np.testing.assert_array_equal(committed_actions(running, 1000, PERIOD, 1), [[0, 1], [0, 1]])
    # A trajectory that ended before the step preceding the observation commits nothing (the chunk starts afresh).
    assert committed_actions(running, 1500, PERIOD, 2) is not None and committed_actions(running, 1600, PERIOD, 2) is None


def test_overlap_is_the_running_prediction_after_the_committed_steps():
    prediction = TimedChunk(start_ns=1000, period_ns=PERIOD, positions=np.arange(20.0).reshape(10, 2), first_index=0,
                            dropped=0)
    assert overlap_actions(None, 1200, PERIOD, 2) is None
    # Committed up to 1300 (stamp 1200, delay 2): the overlap starts at 1400, the prediction's point 4.
    np.testing.assert_array_equal(overlap_actions(prediction, 1200, PERIOD, 2), prediction.positions[4:])
    assert overlap_actions(prediction, 1900, PERIOD, 2).shape == (0, 2)
