"""pusht_sim_node over real DDS on loopback: it publishes observations and executes a trajectory."""
import os
import threading
import time

import numpy as np
import pytest

DOMAIN_ID = 1 + os.getpid() % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

from builtin_interfaces.msg import Duration  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from paradigms_policy.ros.policy_node import RELIABLE_COMMANDS
from paradigms_policy.ros.pusht_sim_node import SCORE_QOS, PushTSimNode


def wait_for(condition, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def trajectory(joint_names, start_ns, period_ns, points):
    msg = JointTrajectory()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(start_ns, 1_000_000_000)
    msg.joint_names = joint_names
    for j, positions in enumerate(points):
        point = JointTrajectoryPoint(positions=[float(v) for v in positions])
        seconds, nanoseconds = divmod(j * period_ns, 1_000_000_000)
        point.time_from_start = Duration(sec=seconds, nanosec=nanoseconds)
        msg.points.append(point)
    return msg


def test_sim_node_publishes_observations_and_executes_a_trajectory():
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    nodes = []
    executor = SingleThreadedExecutor(context=context)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    try:
        sim = PushTSimNode(context=context, parameter_overrides=[
            Parameter("control_rate", value=20.0), Parameter("max_steps", value=10), Parameter("episodes", value=1),
            Parameter("seed", value=7)])
        nodes.append(sim)
        probe = rclpy.create_node("probe", context=context)
        nodes.append(probe)
        observations, scores = [], []
        observation_sub = probe.create_subscription(JointState, "observation", observations.append,
                                                    qos_profile_sensor_data)
        probe.create_subscription(Float32, "episode_score", scores.append, SCORE_QOS)
        commands = probe.create_publisher(JointTrajectory, "joint_trajectory", RELIABLE_COMMANDS)
        for node in nodes:
            executor.add_node(node)
        spinner.start()
        assert wait_for(lambda: commands.get_subscription_count() >= 1 and sim._trajectory_sub.get_publisher_count() >= 1
                        and observation_sub.get_publisher_count() >= 1 and observations), "no observation arrived"

        first = observations[0]
        assert len(first.position) == 20 and first.name[-2:] == ["agent_x", "agent_y"]
        start_xy = np.array(first.position[-2:])
        target = np.clip(start_xy + np.array([60.0, -40.0]), 20.0, 490.0)
        now = probe.get_clock().now().nanoseconds
        # Wrong joint names are rejected; joint order is taken from the names.
        commands.publish(trajectory(["x", "y"], now, 50_000_000, [target] * 3))
        commands.publish(trajectory(["agent_y", "agent_x"], now + 50_000_000, 50_000_000, [target[::-1]] * 12))

        assert wait_for(sim.finished.is_set, timeout=5.0), f"the episode did not finish: {sim._state}, {sim._steps} steps"
        result = sim.results[0]
        assert result["seed"] == 7 and result["steps"] == 10
        # Held only until the trajectory's first point (plus DDS delivery on a loaded machine).
        assert result["held_steps"] <= 5
        assert sim.trajectories_rejected == 1 and sim.trajectories_received == 1
        assert wait_for(lambda: scores, timeout=2.0) and scores[0].data == pytest.approx(result["score"])
        # Observations come stamped at the control rate, and the agent moved towards the target.
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in observations]
        assert len(observations) >= 6 and all(b > a for a, b in zip(stamps, stamps[1:]))
        assert np.median(np.diff(stamps)) == pytest.approx(50_000_000, rel=0.3)
        last_xy = np.array(observations[-1].position[-2:])
        assert np.linalg.norm(last_xy - target) < 0.5 * np.linalg.norm(start_xy - target)
    finally:
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=5)
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)
