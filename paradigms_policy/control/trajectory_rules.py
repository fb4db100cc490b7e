"""What ros2_control's joint_trajectory_controller accepts on its `~/joint_trajectory` topic.

The controller (ros2_controllers, `validate_trajectory_msg`) drops a JointTrajectory, with an
error in its log, unless:

- joint names: not empty, none repeated, each one of the controller's `joints`, and all of them
  unless `allow_partial_joints_goal`;
- points: at least one, time_from_start strictly increasing;
- header.stamp: zero (start on receipt), or a time from which the trajectory does not end in the
  past;
- every point: positions one value per joint, velocities and accelerations empty or one value per
  joint, effort empty (a position command interface); with
  `allow_nonzero_velocity_at_trajectory_end` false the last point's velocities are zero.

`trajectory_problems` checks these and two rules of its own: every value is finite (the
controller would command a NaN), and a non-zero stamp is not in the past at arrival (by more than
`late_start_tolerance_ns`): the controller would start in the middle of the trajectory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

VELOCITY_EPSILON = 1.1920929e-07  # the controller compares with float's epsilon


@dataclass(frozen=True)
class TrajectoryPoint:
    """One point of a JointTrajectory (times in nanoseconds)."""

    time_from_start_ns: int
    positions: Sequence[float]
    velocities: Sequence[float] = ()
    accelerations: Sequence[float] = ()
    effort: Sequence[float] = ()


@dataclass(frozen=True)
class ControllerRules:
    """The controller settings the rules depend on."""

    joints: tuple[str, ...]
    allow_partial_joints_goal: bool = False
    allow_nonzero_velocity_at_trajectory_end: bool = False
    late_start_tolerance_ns: int = 0


def trajectory_problems(joint_names: Sequence[str], stamp_ns: int, points: Sequence[TrajectoryPoint],
                        arrival_ns: int, rules: ControllerRules) -> list[str]:
    """Why the controller would reject this trajectory arriving at `arrival_ns`; [] when it accepts it."""
    problems = joint_problems(list(joint_names), rules)
    if not points:
        return problems + ["the trajectory has no points"]
    problems += timing_problems(stamp_ns, points, arrival_ns, rules.late_start_tolerance_ns)
    for index, point in enumerate(points):
        problems += point_problems(index, point, len(joint_names))
    last = points[-1].velocities
    if not rules.allow_nonzero_velocity_at_trajectory_end and any(abs(v) > VELOCITY_EPSILON for v in last):
        problems.append(f"the last point's velocities {list(last)} are not zero")
    return problems


def joint_problems(names: list[str], rules: ControllerRules) -> list[str]:
    if not names:
        return ["the trajectory has no joint names"]
    problems = []
    if len(set(names)) != len(names):
        problems.append(f"joint names {names} repeat a joint")
    unknown = [name for name in names if name not in rules.joints]
    if unknown:
        problems.append(f"joints {unknown} are not the controller's joints {list(rules.joints)}")
    if not rules.allow_partial_joints_goal and set(names) != set(rules.joints):
        problems.append(f"joint names {names} are not all of the controller's joints {list(rules.joints)}")
    return problems


def timing_problems(stamp_ns: int, points: Sequence[TrajectoryPoint], arrival_ns: int,
                    late_start_tolerance_ns: int = 0) -> list[str]:
    problems = []
    times = [point.time_from_start_ns for point in points]
    if times[0] < 0:
        problems.append(f"the first point's time_from_start {times[0]} ns is negative")
    for index in range(1, len(times)):
        if times[index] <= times[index - 1]:
            problems.append(f"time_from_start is not strictly increasing at point {index} "
                            f"({times[index - 1]} then {times[index]} ns)")
    if stamp_ns != 0 and stamp_ns + times[-1] < arrival_ns:
        problems.append(f"the trajectory ends {(arrival_ns - stamp_ns - times[-1]) / 1e6:.3f} ms before it arrived")
    elif stamp_ns != 0 and stamp_ns < arrival_ns - late_start_tolerance_ns:
        problems.append(f"the trajectory starts {(arrival_ns - stamp_ns) / 1e6:.3f} ms before it arrived")
    return problems


def point_problems(index: int, point: TrajectoryPoint, joint_count: int) -> list[str]:
    problems = []
    if len(point.positions) != joint_count:
        problems.append(f"point {index} has {len(point.positions)} positions for {joint_count} joints")
    for field in ("velocities", "accelerations"):
        values = getattr(point, field)
        if values and len(values) != joint_count:
            problems.append(f"point {index} has {len(values)} {field} for {joint_count} joints")
    if point.effort:
        problems.append(f"point {index} has effort values (the controller commands positions)")
    values = [*point.positions, *point.velocities, *point.accelerations]
    if not all(math.isfinite(value) for value in values):
        problems.append(f"point {index} has a value that is not finite")
    return problems
