"""lifecycle_policy_node over real DDS: its transitions driven over `/policy_node/change_state` and
`/policy_node/get_state` as a lifecycle manager does; publishing stops on deactivate and resumes on activate."""
import os
import threading
import time

import numpy as np
import pytest

DOMAIN_ID = 1 + (os.getpid() + 29) % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")
pytest.importorskip("lifecycle_msgs", reason="lifecycle_msgs is not importable (pip install 'paradigms_policy[ros]')")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.config import SchedulerConfig  # noqa: E402
from paradigms_policy.model import ConditionalUnet1D  # noqa: E402
from paradigms_policy.ros.common import (RELIABLE_COMMANDS, LocalSession, StartupError, ns_to_time_msg,  # noqa: E402
                                         parameter_overrides)
from paradigms_policy.ros.lifecycle_policy_node import LifecyclePolicyNode  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model, wait_for  # noqa: E402

pytestmark = pytest.mark.dds


class Manager:
    """A lifecycle manager's view of the node: its services, observations at 10 Hz, the trajectories heard."""

    def __init__(self, session):
        self.probe = session.create_node("lifecycle_manager")
        self.change = self.probe.create_client(ChangeState, "/policy_node/change_state")
        self.get = self.probe.create_client(GetState, "/policy_node/get_state")
        self.trajectories = []  # (message, source timestamp: when the node published it)
        self.subscription = self.probe.create_subscription(
            JointTrajectory, "joint_trajectory", lambda msg, info: self.trajectories.append((msg, info["source_timestamp"])),
            RELIABLE_COMMANDS)
        self.observations = self.probe.create_publisher(JointState, "observation", 10)
        self.probe.create_timer(0.1, self._observe)
        self.rng = np.random.default_rng(1)

    def _observe(self):
        msg = JointState()
        msg.header.stamp = ns_to_time_msg(self.now())
        msg.position = [float(v) for v in self.rng.uniform(100.0, 400.0, 20)]
        self.observations.publish(msg)

    def now(self):
        return self.probe.get_clock().now().nanoseconds

    def _call(self, client, request):
        assert client.wait_for_service(timeout_sec=10.0), f"no service {client.srv_name}"
        future = client.call_async(request)
        assert wait_for(future.done, 30.0), f"{client.srv_name} did not answer"
        return future.result()

    def transition(self, transition_id):
        """Request the transition; (its success, the time the answer arrived)."""
        result = self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id)))
        return result.success, self.now()

    def state(self):
        return self._call(self.get, GetState.Request()).current_state.id

    def published_after(self, ns):
        return [msg for msg, published in self.trajectories if published > ns]


@pytest.fixture
def checkpoint(tmp_path):
    config = small_config(SchedulerConfig(name="ddim", num_inference_steps=8))
    return save_policy(tmp_path / "tiny", config, small_model(config=config), *pixel_normalizers())


@pytest.fixture
def session():
    with LocalSession(DOMAIN_ID, name="lifecycle-test") as session:
        yield session


def lifecycle_node(session, checkpoint, **params):
    values = {"checkpoint": str(checkpoint), "num_threads": 1, "warmup_runs": 1, "sampler": "sequential", **params}
    return session.add(LifecyclePolicyNode(context=session.context, parameter_overrides=parameter_overrides(values)))


def test_transitions_over_the_lifecycle_services(session, checkpoint):
    node = lifecycle_node(session, checkpoint)
    manager = Manager(session)
    session.start()
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED and node.policy is None
    time.sleep(0.5)
    assert manager.subscription.get_publisher_count() == 0, "a trajectory publisher before configure"

    assert manager.transition(Transition.TRANSITION_CONFIGURE)[0]
    assert manager.state() == State.PRIMARY_STATE_INACTIVE and node.policy is not None
    assert wait_for(lambda: manager.subscription.get_publisher_count() == 1)
    time.sleep(0.5)
    assert manager.trajectories == [], "published while inactive"

    assert manager.transition(Transition.TRANSITION_ACTIVATE)[0]
    assert manager.state() == State.PRIMARY_STATE_ACTIVE
    assert wait_for(lambda: len(manager.trajectories) >= 3), "no trajectories once active"

    ok, deactivated = manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert ok and manager.state() == State.PRIMARY_STATE_INACTIVE
    time.sleep(0.8)
    assert manager.published_after(deactivated) == [], "published after deactivate"

    ok, activated = manager.transition(Transition.TRANSITION_ACTIVATE)
    assert ok and wait_for(lambda: len(manager.published_after(activated)) >= 2), "publishing did not resume"

    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        assert manager.transition(transition)[0]
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED and node.policy is None  # model released
    assert wait_for(lambda: manager.subscription.get_publisher_count() == 0), "the publisher outlived cleanup"

    assert manager.transition(Transition.TRANSITION_CONFIGURE)[0] and node.policy is not None  # loads again
    assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN)[0]
    assert manager.state() == State.PRIMARY_STATE_FINALIZED and node.policy is None


def test_deactivate_drops_the_chunk_in_flight(session, checkpoint, monkeypatch):
    node = lifecycle_node(session, checkpoint)
    manager = Manager(session)
    session.start()
    assert manager.transition(Transition.TRANSITION_CONFIGURE)[0]
    in_flight = threading.Event()
    original = ConditionalUnet1D.denoise

    def slow_denoise(self, *inputs):  # 8 steps: 0.8 s per chunk from now on (the warm-up is done)
        in_flight.set()
        time.sleep(0.1)
        return original(self, *inputs)

    monkeypatch.setattr(ConditionalUnet1D, "denoise", slow_denoise)
    assert manager.transition(Transition.TRANSITION_ACTIVATE)[0]
    assert in_flight.wait(5.0), "no chunk started"
    ok, deactivated = manager.transition(Transition.TRANSITION_DEACTIVATE)
    assert ok
    assert wait_for(lambda: node.statistics()["chunks_abandoned"] == 1, 2.0), node.statistics()
    time.sleep(0.5)
    assert manager.published_after(deactivated) == []
    assert node.statistics()["chunks_published"] == 0


def test_a_bad_checkpoint_fails_configure_and_the_node_stays_unconfigured(session, tmp_path):
    node = lifecycle_node(session, tmp_path / "absent")
    manager = Manager(session)
    session.start()
    assert manager.transition(Transition.TRANSITION_CONFIGURE)[0] is False
    assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED and node.policy is None


def test_invalid_parameters_fail_at_construction(session, checkpoint):
    with pytest.raises(StartupError, match="sampler must be one of"):
        lifecycle_node(session, checkpoint, sampler="nope")
