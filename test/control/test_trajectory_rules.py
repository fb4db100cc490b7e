"""control/trajectory_rules.py: joint_trajectory_controller's acceptance rules, ROS-free (no rclpy needed)."""
import math

import pytest

from paradigms_policy.control.trajectory_rules import ControllerRules, TrajectoryPoint, trajectory_problems

MS = 1_000_000
JOINTS = ("agent_x", "agent_y")
RULES = ControllerRules(JOINTS)
NOW = 1_000_000 * MS


def points(count=3, period=100 * MS, **fields):
    return [TrajectoryPoint(j * period, [1.0 + j, 2.0 + j], **fields) for j in range(count)]


def problems(names=JOINTS, stamp=NOW, trajectory=None, arrival=NOW, rules=RULES):
    return trajectory_problems(list(names), stamp, points() if trajectory is None else trajectory, arrival, rules)


def test_a_trajectory_like_the_policy_nodes_is_accepted():
    assert problems() == []
    assert problems(stamp=0) == []  # zero: start on receipt
    assert problems(names=("agent_y", "agent_x")) == []  # the controller maps joints by name
    assert problems(trajectory=points(velocities=[0.0, 0.0], accelerations=[0.5, 0.5])) == []


@pytest.mark.parametrize("names, message", [
    ((), "no joint names"),
    (("agent_x",), "not all of the controller's joints"),
    (("agent_x", "agent_z"), "['agent_z'] are not the controller's joints"),
    (("agent_x", "agent_y", "agent_x"), "repeat a joint"),
])
def test_joint_names_must_be_the_controllers(names, message):
    found = problems(names=names, trajectory=[TrajectoryPoint(0, [0.0] * len(names))])
    assert any(message in problem for problem in found), found


def test_partial_joint_goals_only_when_allowed():
    partial = [TrajectoryPoint(0, [1.0])]
    assert problems(names=("agent_x",), trajectory=partial)
    assert problems(names=("agent_x",), trajectory=partial, rules=ControllerRules(JOINTS, True)) == []


def test_times_must_strictly_increase_and_points_exist():
    assert problems(trajectory=[]) == ["the trajectory has no points"]
    repeated = [TrajectoryPoint(0, [1.0, 2.0]), TrajectoryPoint(100 * MS, [1.0, 2.0]), TrajectoryPoint(100 * MS, [1, 2])]
    assert any("not strictly increasing at point 2" in p for p in problems(trajectory=repeated))
    assert any("negative" in p for p in problems(trajectory=[TrajectoryPoint(-1, [1.0, 2.0])]))


def test_stamp_in_the_past_at_arrival():
    ends_before = problems(stamp=NOW - 300 * MS)  # the last point (200 ms) was due before arrival
    assert len(ends_before) == 1 and "ends 100.000 ms before it arrived" in ends_before[0]
    starts_before = problems(stamp=NOW - 5 * MS)
    assert len(starts_before) == 1 and "starts 5.000 ms before it arrived" in starts_before[0]
    assert problems(stamp=NOW - 5 * MS, rules=ControllerRules(JOINTS, late_start_tolerance_ns=10 * MS)) == []
    assert problems(stamp=NOW + 50 * MS) == []  # in the future: fine


@pytest.mark.parametrize("field, values, message", [
    ("positions", [1.0], "1 positions for 2 joints"),
    ("velocities", [0.0], "1 velocities for 2 joints"),
    ("accelerations", [0.0, 0.0, 0.0], "3 accelerations for 2 joints"),
    ("effort", [0.0, 0.0], "effort values"),
    ("positions", [math.nan, 1.0], "not finite"),
    ("velocities", [math.inf, 0.0], "not finite"),
])
def test_every_point_has_the_right_sizes_and_finite_values(field, values, message):
    trajectory = points()
    fields = {"positions": trajectory[1].positions, field: values}
    trajectory[1] = TrajectoryPoint(trajectory[1].time_from_start_ns, **fields)
    found = problems(trajectory=trajectory)
    assert any(message in problem and "point 1" in problem for problem in found), found


def test_nonzero_velocity_at_the_end_only_when_allowed():
    moving = points(velocities=[0.0, 0.0])[:-1] + [TrajectoryPoint(200 * MS, [3.0, 4.0], [0.1, 0.0])]
    assert any("last point's velocities" in p for p in problems(trajectory=moving))
    allowed = ControllerRules(JOINTS, allow_nonzero_velocity_at_trajectory_end=True)
    assert problems(trajectory=moving, rules=allowed) == []
