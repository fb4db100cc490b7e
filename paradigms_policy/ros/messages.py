"""Messages of the policy node and the simulation: trajectories out and in, diagnostics."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..control import diagnostics
from ..control.diagnostics import Report
from ..control.trajectory_rules import TrajectoryPoint
from .common import ns_to_duration_msg, ns_to_time_msg, stamp_to_ns

DIAGNOSTIC_LEVELS = {diagnostics.OK: DiagnosticStatus.OK, diagnostics.WARN: DiagnosticStatus.WARN,
                     diagnostics.ERROR: DiagnosticStatus.ERROR}


def trajectory_message(chunk, joint_names) -> JointTrajectory:
    """A JointTrajectory for a `TimedChunk`: stamp = first point's due time, points one period apart."""
    msg = JointTrajectory()
    msg.header.stamp = ns_to_time_msg(chunk.start_ns)
    msg.joint_names = list(joint_names)
    for offset, positions in zip(chunk.times_from_start_ns(), chunk.positions):
        point = JointTrajectoryPoint()
        point.positions = [float(value) for value in positions]
        point.time_from_start = ns_to_duration_msg(offset)
        msg.points.append(point)
    return msg


def trajectory_fields(msg: JointTrajectory) -> tuple[list[str], int, list[TrajectoryPoint]]:
    """(joint names, header stamp in ns, points) of a JointTrajectory, for `control.trajectory_rules`."""
    points = [TrajectoryPoint(stamp_to_ns(p.time_from_start), list(p.positions), list(p.velocities),
                              list(p.accelerations), list(p.effort)) for p in msg.points]
    return list(msg.joint_names), stamp_to_ns(msg.header.stamp), points


def diagnostic_array(report: Report, name: str, hardware_id: str, stamp) -> DiagnosticArray:
    """A DiagnosticArray with one status: `report`'s level, message and values."""
    status = DiagnosticStatus()
    status.name = name
    status.hardware_id = hardware_id
    status.level = DIAGNOSTIC_LEVELS[report.level]
    status.message = report.message
    status.values = [KeyValue(key=key, value=value) for key, value in report.values]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array
