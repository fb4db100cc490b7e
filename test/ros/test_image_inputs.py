"""An image policy's node over real DDS on loopback: joint states and camera frames in, trajectories out.

A tiny random policy with two cameras ('left', 'right', 48x64: not square, so a swapped height and
width shows) and the agent position; its frames come on the remapped topics camera/left and
camera/right, its joint states on 'observation'. Each test runs its own `LocalSession` in a
test-unique ROS domain with LOCALHOST discovery.
"""
import os
import time

import numpy as np
import pytest
import torch

DOMAIN_ID = 1 + (os.getpid() + 43) % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.checkpoint import load_policy  # noqa: E402
from paradigms_policy.config import SchedulerConfig  # noqa: E402
from paradigms_policy.ros.common import (RELIABLE_COMMANDS, LocalSession, StartupError, ns_to_time_msg,  # noqa: E402
                                         parameter_overrides, stamp_to_ns)
from paradigms_policy.ros.policy_node import PolicyNode  # noqa: E402
from paradigms_policy.vision import image_input  # noqa: E402

from image_policy import image_policy_config, save_image_policy  # noqa: E402
from conftest import wait_for  # noqa: E402

pytestmark = pytest.mark.dds

PERIOD_NS = 100_000_000  # control_rate 10 Hz
MS = 1_000_000
HEIGHT, WIDTH = 48, 64  # the last ResNet stage is 2x2: the spatial softmax sees the image
TOPICS = {"left": "camera/left", "right": "camera/right"}
WIDE_BOUNDS = {"action_min": [-1e4, -1e4], "action_max": [1e4, 1e4]}  # nothing clipped


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = image_policy_config(cameras=(("left", (3, HEIGHT, WIDTH)), ("right", (3, HEIGHT, WIDTH))),
                                 crop_shape=None, scheduler=SchedulerConfig(name="ddim", num_inference_steps=10))
    return save_image_policy(tmp_path_factory.mktemp("ckpt") / "tiny_image", config)


def rgb(seed):
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def image_message(pixels, stamp, encoding="rgb8", step=None):
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=3 * pixels.shape[1] if step is None else step)
    msg.header.stamp = ns_to_time_msg(stamp)
    msg.data = pixels.tobytes()
    return msg


class Harness:
    """A session with a probe that publishes joint states and both cameras' frames and records what comes back."""

    def __init__(self, checkpoint):
        self.checkpoint = str(checkpoint)
        self.session = LocalSession(DOMAIN_ID, name="test")
        self.probe = self.session.create_node("probe")
        self.trajectories = []
        self.diagnostics = []
        self.trajectory_sub = self.probe.create_subscription(JointTrajectory, "joint_trajectory",
                                                             self.trajectories.append, RELIABLE_COMMANDS)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.matched_readers = {}  # readers each writer has matched (the graph can show them earlier)
        self.joint_pub = self._publisher(JointState, "observation")
        self.frame_pubs = {key: self._publisher(Image, topic) for key, topic in TOPICS.items()}

    def _publisher(self, message, topic):
        def on_matched(info):
            self.matched_readers[topic] = info.current_count

        return self.probe.create_publisher(message, topic, 10,
                                           event_callbacks=PublisherEventCallbacks(matched=on_matched))

    def now(self):
        return self.probe.get_clock().now().nanoseconds

    def policy_node(self, **params):
        values = {"checkpoint": self.checkpoint, "num_threads": 1, "warmup_runs": 1, "diagnostics_rate": 20.0,
                  "sampler": "sequential", "image_topics": list(TOPICS.values()), "max_observation_age_ms": 2000.0}
        values.update(params)
        return self.session.add(PolicyNode(context=self.session.context,
                                           parameter_overrides=parameter_overrides(values)))

    def start(self, node):
        self.session.start()

        def matched():
            stats = node.statistics()
            return (all(self.matched_readers.get(topic, 0) >= 1 for topic in ("observation", *TOPICS.values()))
                    and stats["observation_publishers"] >= 1 and stats["camera_left_publishers"] >= 1
                    and stats["camera_right_publishers"] >= 1 and self.trajectory_sub.get_publisher_count() >= 1)

        assert wait_for(matched), "discovery did not complete"

    def joint_state(self, position, stamp):
        msg = JointState()
        msg.header.stamp = ns_to_time_msg(stamp)
        msg.name = ["agent_x", "agent_y"]
        msg.position = [float(v) for v in position]
        self.joint_pub.publish(msg)

    def frame(self, key, msg):
        self.frame_pubs[key].publish(msg)

    def close(self):
        self.session.close()


@pytest.fixture
def ros(checkpoint):
    harness = Harness(checkpoint)
    yield harness
    harness.close()


def statuses(ros):
    return [status for array in list(ros.diagnostics) for status in array.status]


def values_of(status):
    return {item.key: item.value for item in status.values}


def test_frames_and_joint_states_become_the_window_the_policy_is_given(ros, checkpoint):
    """Two steps (joint state, a left frame in rgb8 and a right one in bgr8, stamped within the tolerance):
    the trajectory is the policy's answer for exactly the window evaluation would build."""
    node = ros.policy_node(seed=5, **WIDE_BOUNDS)
    ros.start(node)
    frames = {key: [rgb(10 * step + index) for step in range(2)] for index, key in enumerate(TOPICS)}
    positions = [[250.0, 240.0], [260.0, 230.0]]
    first = ros.now()
    stamps = [first, first + PERIOD_NS]
    for step, stamp in enumerate(stamps):
        while ros.now() < stamp:
            time.sleep(0.002)
        ros.frame("left", image_message(frames["left"][step], stamp - 5 * MS))
        ros.joint_state(positions[step], stamp)
        bgr = np.ascontiguousarray(frames["right"][step][..., ::-1])
        ros.frame("right", image_message(bgr, stamp + 8 * MS, encoding="bgr8"))
    assert wait_for(lambda: ros.trajectories, timeout=5.0), f"no trajectory: {node.statistics()}"
    msg = ros.trajectories[0]
    lead = stamp_to_ns(msg.header.stamp) - stamps[1]  # stamped from the second joint state on
    assert lead % PERIOD_NS == 0 and 0 < lead <= 5 * PERIOD_NS
    window = {key: np.stack([image_input(frame) for frame in frames[key]]) for key in TOPICS}
    window["agent_pos"] = np.array(positions, dtype=np.float32)
    expected = load_policy(checkpoint).predict(window, generator=torch.Generator().manual_seed(5))
    published = np.array([point.positions for point in msg.points])
    assert np.array_equal(published, expected.actions[lead // PERIOD_NS:].astype(np.float64))
    stats = node.statistics()
    assert (stats["frames_accepted"], stats["observations_accepted"], stats["inferences"]) == (4, 2, 1)
    assert (stats["frames_rejected"], stats["observations_unmatched"], stats["silent_cameras"]) == (0, 0, [])


def test_bad_frames_are_rejected_counted_and_never_used(ros):
    node = ros.policy_node()
    ros.start(node)
    stamps = [ros.now(), ros.now() + PERIOD_NS]
    for stamp in stamps:
        ros.joint_state([250.0, 250.0], stamp)
        ros.frame("left", image_message(rgb(1), stamp))
    # Each step's right frame is bad: the wrong size, the wrong encoding, a step that does not match the data.
    ros.frame("right", image_message(np.zeros((WIDTH, HEIGHT, 3), np.uint8), stamps[0]))
    ros.frame("right", image_message(rgb(2), stamps[0], encoding="rgba8"))
    ros.frame("right", image_message(rgb(2), stamps[1], step=3 * WIDTH + 2))
    assert wait_for(lambda: node.statistics()["frames_received"] == 5, timeout=3.0), node.statistics()
    time.sleep(0.3)
    stats = node.statistics()
    assert (stats["frames_rejected_wrong_size"], stats["frames_rejected_wrong_encoding"],
            stats["frames_rejected_bad_layout"], stats["frames_accepted"]) == (1, 1, 1, 2)
    assert stats["inferences"] == 0 and ros.trajectories == [], "a set with a rejected frame was used"

    def warned():
        return any(s.level == DiagnosticStatus.WARN and "3 rejected frame(s)" in s.message
                   and values_of(s)["frames_rejected_wrong_size"] == "1" for s in statuses(ros))

    assert wait_for(warned, timeout=2.0), [s.message for s in statuses(ros)]
    # Good right frames complete both waiting joint states: the node goes on with them.
    for stamp in stamps:
        ros.frame("right", image_message(rgb(3), stamp))
    assert wait_for(lambda: ros.trajectories, timeout=3.0), node.statistics()
    assert node.statistics()["frames_accepted"] == 4


def stream(ros, seconds, cameras=tuple(TOPICS)):
    """Joint states and the frames of `cameras`, one period apart and stamped alike, for `seconds`."""
    stamp = ros.now()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ros.joint_state([250.0 + (stamp // PERIOD_NS) % 20, 250.0], stamp)
        for key in cameras:
            ros.frame(key, image_message(rgb(int(stamp // PERIOD_NS) % 7), stamp))
        stamp += PERIOD_NS
        while ros.now() < stamp:
            time.sleep(0.002)


def test_a_stopped_camera_stops_inference_and_is_named_in_the_diagnostics(ros):
    # Plan from every new window step, so that inferences follow the steps one by one.
    node = ros.policy_node(plan_ahead_periods=8, max_observation_age_ms=500.0)
    ros.start(node)
    stream(ros, 1.0)
    assert node.statistics()["inferences"] >= 3, node.statistics()
    assert not any(s.level == DiagnosticStatus.ERROR for s in statuses(ros))
    stream(ros, 0.3, cameras=("left",))  # the right camera stops; joint states and the left camera go on
    inferences = node.statistics()["inferences"]
    stream(ros, 1.0, cameras=("left",))
    stats = node.statistics()
    assert stats["inferences"] == inferences, "inference went on without the right camera"
    assert stats["silent_cameras"] == ["right"] and stats["observations_unmatched"] >= 5
    assert stats["camera_right_frame_age_ms"] > 1000.0 > 300.0 > stats["camera_left_frame_age_ms"]

    def reported():
        return any(s.level == DiagnosticStatus.ERROR and "camera(s) right" in s.message
                   and values_of(s)["silent_cameras"] == "right" for s in statuses(ros))

    assert wait_for(reported, timeout=2.0), [s.message for s in statuses(ros)]
    stream(ros, 0.6)  # the camera is back: so are complete sets and inference
    assert node.statistics()["inferences"] > inferences and node.statistics()["silent_cameras"] == []


@pytest.mark.parametrize("params, expected", [
    ({"observation_type": "float32_multi_array"}, "an image policy needs observation_type joint_state"),
    ({"image_topics": ["camera/left"]}, "image_topics has 1 entries but the policy has the image keys"),
])
def test_an_image_policy_with_unusable_camera_parameters_does_not_start(ros, params, expected):
    with pytest.raises(StartupError, match=expected):
        ros.policy_node(**params)
