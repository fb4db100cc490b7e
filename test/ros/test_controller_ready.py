"""Every trajectory policy_node publishes, as received over real DDS, passes joint_trajectory_controller's
acceptance rules (control/trajectory_rules.py) for a controller configured with the node's joints."""
import os

import numpy as np
import pytest

DOMAIN_ID = 1 + (os.getpid() + 17) % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")

from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.config import SchedulerConfig  # noqa: E402
from paradigms_policy.control.trajectory_rules import ControllerRules, trajectory_problems  # noqa: E402
from paradigms_policy.ros.common import (RELIABLE_COMMANDS, LocalSession, ns_to_time_msg,  # noqa: E402
                                         parameter_overrides)
from paradigms_policy.ros.messages import trajectory_fields  # noqa: E402
from paradigms_policy.ros.policy_node import PolicyNode  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model, wait_for  # noqa: E402

pytestmark = pytest.mark.dds

JOINTS = ("slide_x", "slide_y")
MS = 1_000_000
# The node keeps the actions due at or after the moment the chunk is ready; the first of them can be
# due a delivery latency before the trajectory arrives (the controller accepts that: it rejects only a
# trajectory that ends in the past). A tenth of the 100 ms period covers delivery on a loaded machine
# and still catches a trajectory whose first point is an outdated action.
LATE_START_TOLERANCE_NS = 10 * MS


@pytest.fixture
def session():
    with LocalSession(DOMAIN_ID, name="controller-test") as session:
        yield session


@pytest.mark.parametrize("sampler", ["parataa", "sequential"])
def test_every_published_trajectory_is_accepted_by_the_controller(session, tmp_path, sampler):
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=8))
    checkpoint = save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())
    node = session.add(PolicyNode(context=session.context, parameter_overrides=parameter_overrides(
        {"checkpoint": str(checkpoint), "num_threads": 1, "warmup_runs": 1, "sampler": sampler,
         "joint_names": list(JOINTS)})))
    probe = session.create_node("controller_probe")
    received = []  # (message, reception time of the middleware, ns)
    probe.create_subscription(JointTrajectory, "joint_trajectory",
                              lambda msg, info: received.append((msg, info["received_timestamp"])), RELIABLE_COMMANDS)
    observations = probe.create_publisher(JointState, "observation", 10)
    rng = np.random.default_rng(0)

    def observe():
        msg = JointState()
        msg.header.stamp = ns_to_time_msg(probe.get_clock().now().nanoseconds)
        msg.position = [float(v) for v in rng.uniform(100.0, 400.0, 20)]
        observations.publish(msg)

    probe.create_timer(0.1, observe)
    session.start()
    assert wait_for(lambda: len(received) >= 15, 20.0), f"{len(received)} trajectories; {node.statistics()}"

    rules = ControllerRules(JOINTS, late_start_tolerance_ns=LATE_START_TOLERANCE_NS)
    lags_ms = []
    for msg, arrival in received:
        names, stamp, points = trajectory_fields(msg)
        assert trajectory_problems(names, stamp, points, arrival, rules) == []
        assert names == list(JOINTS) and all(not p.velocities and not p.accelerations for p in points)
        lags_ms.append((arrival - stamp) / MS)
    print(f"{len(received)} trajectories; first point due {-max(lags_ms):.2f} .. {-min(lags_ms):.2f} ms after arrival")
