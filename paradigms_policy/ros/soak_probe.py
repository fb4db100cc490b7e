"""The soak's nodes: the policy node and a probe that feeds it observations and counts what comes back."""
from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from .common import RELIABLE_COMMANDS, LocalSession, ns_to_time_msg, parameter_overrides
from .policy_node import PolicyNode

LEVEL_COUNTS = {0: "diagnostics_ok", 1: "diagnostics_warn"}  # anything else: diagnostics_error


class SoakProbe:
    """`PolicyNode` (parameters from `overrides`) and a probe node on one `LocalSession`.

    The probe publishes stamped observations (sensor_msgs/JointState) on the node's observation
    topic and counts, in `counts`, the JointTrajectory messages and the /diagnostics statuses by
    level that come back. Raises `StartupError` when the node cannot start (the session is then
    closed); otherwise both spin until `close`.
    """

    def __init__(self, overrides: dict[str, Any], domain_id: int | None = None):
        self.session = LocalSession(domain_id, name="soak")
        self.counts = {"trajectories": 0, "diagnostics": 0, "diagnostics_ok": 0, "diagnostics_warn": 0,
                       "diagnostics_error": 0}
        try:
            self.node = self.session.add(PolicyNode(context=self.session.context,
                                                    parameter_overrides=parameter_overrides(overrides)))
            self._probe = self.session.create_node("soak_probe")
            self._trajectory_topic = self.node.get_parameter("trajectory_topic").value
            self._probe.create_subscription(JointTrajectory, self._trajectory_topic, self._on_trajectory,
                                            RELIABLE_COMMANDS)
            self._probe.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
            self._observations = self._probe.create_publisher(
                JointState, self.node.get_parameter("observation_topic").value, 10)
        except BaseException:
            self.session.close()
            raise
        self.session.start()

    def _on_trajectory(self, _msg) -> None:
        self.counts["trajectories"] += 1  # one subscription, one callback at a time

    def _on_diagnostics(self, msg) -> None:
        self.counts["diagnostics"] += 1
        for status in msg.status:
            level = status.level  # a one-byte bytes object in rclpy
            level = level[0] if isinstance(level, (bytes, bytearray)) else int(level)
            self.counts[LEVEL_COUNTS.get(level, "diagnostics_error")] += 1

    def wait_for_discovery(self, timeout_s: float = 10.0) -> bool:
        """Whether the probe and the node have discovered each other (both topics) within `timeout_s`."""
        end = time.monotonic() + timeout_s
        while not (self._observations.get_subscription_count() >= 1
                   and self.node.count_subscribers(self._trajectory_topic) >= 1):
            if time.monotonic() > end:
                return False
            time.sleep(0.01)
        return True

    def publish(self, values) -> None:
        """One observation, stamped now on the probe's clock."""
        msg = JointState()
        msg.header.stamp = ns_to_time_msg(self._probe.get_clock().now().nanoseconds)
        msg.position = [float(v) for v in values]
        self._observations.publish(msg)

    def close(self) -> None:
        self.session.close()
