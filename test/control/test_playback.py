"""control/playback.py: the command due at each tick of the simulation, from received trajectories."""
import pytest

from paradigms_policy.control.playback import TrajectorySchedule
from paradigms_policy.control.timing import NS_PER_MS

P = 100 * NS_PER_MS
S = 1_700_000_000 * 10**9


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
    assert schedule.last_due_ns() == S + 5 * P
    action, fresh = schedule.command_at(S + 7 * P, P)  # ran out: hold the last point
    assert list(action) == [50, 50] and not fresh
    with pytest.raises(ValueError):
        schedule.insert([S, S], [[0, 0], [1, 1]])
    schedule.clear()
    assert len(schedule) == 0 and schedule.command_at(S + 8 * P, P) == (None, False)
