"""pusht_sim_node over real DDS on loopback: it publishes observations and executes a trajectory."""
import os

import numpy as np
import pytest

DOMAIN_ID = 1 + os.getpid() % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")
pytest.importorskip("gym_pusht", reason="gym-pusht is not installed (pip install 'paradigms_policy[sim]')")

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from paradigms_policy.ros.common import (RELIABLE_COMMANDS, SCORE_QOS, SENSOR_QOS, LocalSession,  # noqa: E402
                                         ns_to_duration_msg, ns_to_time_msg, parameter_overrides)
from paradigms_policy.ros.pusht_sim_node import PushTSimNode  # noqa: E402
from conftest import wait_for  # noqa: E402

pytestmark = pytest.mark.dds


def trajectory(joint_names, start_ns, period_ns, points):
    msg = JointTrajectory()
    msg.header.stamp = ns_to_time_msg(start_ns)
    msg.joint_names = joint_names
    for j, positions in enumerate(points):
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in positions],
                                               time_from_start=ns_to_duration_msg(j * period_ns)))
    return msg


def test_sim_node_publishes_observations_and_executes_a_trajectory():
    with LocalSession(DOMAIN_ID, name="test") as session:
        sim = session.add(PushTSimNode(context=session.context, parameter_overrides=parameter_overrides(
            {"control_rate": 20.0, "max_steps": 10, "episodes": 1, "seed": 7})))
        probe = session.create_node("probe")
        observations, scores = [], []
        observation_sub = probe.create_subscription(JointState, "observation", observations.append, SENSOR_QOS)
        probe.create_subscription(Float32, "episode_score", scores.append, SCORE_QOS)
        commands = probe.create_publisher(JointTrajectory, "joint_trajectory", RELIABLE_COMMANDS)
        session.start()
        assert wait_for(lambda: commands.get_subscription_count() >= 1 and sim.trajectory_publishers >= 1
                        and observation_sub.get_publisher_count() >= 1 and observations), "no observation arrived"

        first = observations[0]
        assert len(first.position) == 20 and first.name[-2:] == ["agent_x", "agent_y"]
        start_xy = np.array(first.position[-2:])
        target = np.clip(start_xy + np.array([60.0, -40.0]), 20.0, 490.0)
        now = probe.get_clock().now().nanoseconds
        # Wrong joint names are rejected; joint order is taken from the names.
        commands.publish(trajectory(["x", "y"], now, 50_000_000, [target] * 3))
        commands.publish(trajectory(["agent_y", "agent_x"], now + 50_000_000, 50_000_000, [target[::-1]] * 12))

        assert wait_for(sim.finished.is_set, timeout=5.0), f"the episode did not finish: {sim.results}"
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


def test_sim_node_publishes_frames_and_the_agent_position_for_an_image_policy():
    from sensor_msgs.msg import Image

    from paradigms_policy.pusht.env import PushTKeypointsEnv

    with LocalSession(DOMAIN_ID, name="test") as session:
        session.add(PushTSimNode(context=session.context, parameter_overrides=parameter_overrides(
            {"control_rate": 20.0, "max_steps": 40, "episodes": 1, "seed": 7, "observation": "image",
             "image_size": 64})))
        probe = session.create_node("probe")
        observations, frames = [], []
        probe.create_subscription(JointState, "observation", observations.append, SENSOR_QOS)
        probe.create_subscription(Image, "image", frames.append, SENSOR_QOS)
        session.start()
        assert wait_for(lambda: len(observations) >= 3 and len(frames) >= 3), "no observation or frame arrived"

    env = PushTKeypointsEnv()
    try:
        start = env.reset(seed=7)
        expected_frame = env.frame(64)
    finally:
        env.close()
    # Without a command the agent holds where it stands: every step shows the episode's first state.
    first = observations[0]
    assert list(first.name) == ["agent_x", "agent_y"] and list(first.position) == list(start[-2:])
    frame = frames[0]
    assert (frame.height, frame.width, frame.encoding, frame.step) == (64, 64, "rgb8", 3 * 64)
    assert np.array_equal(np.frombuffer(frame.data, np.uint8).reshape(64, 64, 3), expected_frame)
    # Each step's frame has the stamp of the agent position published for that step.
    frame_stamps = [stamp_of(f) for f in frames]
    assert len(set(frame_stamps)) == len(frames)
    overlap = [stamp_of(o) for o in observations if min(frame_stamps) <= stamp_of(o) <= max(frame_stamps)]
    assert overlap == frame_stamps  # (either subscription may have matched the first messages or not)


def stamp_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
