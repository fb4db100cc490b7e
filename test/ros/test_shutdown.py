"""SIGINT and SIGTERM, once or twice, in every phase of the node executables: exit code 0 within 5 s,
at most one line after the signal, no traceback.

Each case runs `python -m paradigms_policy.ros.<node> --ros-args ...` as a subprocess over real DDS
on this host. Phases: start-up (checkpoint loading), warm-up, inference (a chunk in flight) and
idle, for policy_node; configuring and active for lifecycle_policy_node (driven over its
change_state service). The slow checkpoint's chunk (sequential, 1000 steps) takes seconds on a CPU,
so a signal 0.3 s into it lands in the middle of the warm-up or of the inference.
"""
import os
import signal
import time

import numpy as np
import pytest

DOMAIN_ID = 1 + (os.getpid() + 37) % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")
pytest.importorskip("lifecycle_msgs", reason="lifecycle_msgs is not importable (pip install 'paradigms_policy[ros]')")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from paradigms_policy.checkpoint import save_policy  # noqa: E402
from paradigms_policy.config import PolicyConfig, SchedulerConfig  # noqa: E402
from paradigms_policy.model import ConditionalUnet1D  # noqa: E402
from paradigms_policy.ros.common import LocalSession, ns_to_time_msg  # noqa: E402

from conftest import pixel_normalizers, small_config, small_model  # noqa: E402
from node_process import NodeProcess  # noqa: E402

pytestmark = pytest.mark.dds

BUDGET_S = 5.0  # ros2 launch escalates to SIGTERM after 5 s
FEED_TOPIC = "shutdown_feed"  # only the inference case listens here
VARIANTS = [(signal.SIGINT, 1), (signal.SIGTERM, 1), (signal.SIGINT, 2), (signal.SIGTERM, 2)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shutdown")
    tiny_config = small_config(SchedulerConfig(name="ddim", num_inference_steps=4))
    tiny = save_policy(folder / "tiny", tiny_config, small_model(config=tiny_config), *pixel_normalizers())
    slow_config = PolicyConfig.for_shapes(20, 2, down_dims=(64, 128, 256), diffusion_step_embed_dim=32, n_groups=8,
                                          scheduler=SchedulerConfig(num_train_timesteps=1000, num_inference_steps=1000))
    slow = save_policy(folder / "slow", slow_config, ConditionalUnet1D.from_config(slow_config.unet),
                       *pixel_normalizers())
    return {"tiny": str(tiny), "slow": str(slow)}


class Probe:
    """The test's side of DDS: observations on FEED_TOPIC at 10 Hz, the /diagnostics heard, a lifecycle client."""

    def __init__(self):
        self.session = LocalSession(DOMAIN_ID, name="shutdown-test")
        self.node = self.session.create_node("shutdown_probe")
        self.diagnostics = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.feed = self.node.create_publisher(JointState, FEED_TOPIC, 10)
        self.node.create_timer(0.1, self._publish)
        self.change_state = self.node.create_client(ChangeState, "/policy_node/change_state")
        self.session.start()

    def _publish(self):
        msg = JointState()
        msg.header.stamp = ns_to_time_msg(self.node.get_clock().now().nanoseconds)
        msg.position = [float(v) for v in np.full(20, 256.0)]
        self.feed.publish(msg)

    def last_value(self, key):
        for array in reversed(self.diagnostics):
            for item in array.status[0].values:
                if item.key == key:
                    return item.value
        return None

    def transition(self, transition_id):
        assert self.change_state.wait_for_service(timeout_sec=20.0), "no change_state service"
        return self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition_id)))


@pytest.fixture(scope="module")
def probe():
    probe = Probe()
    yield probe
    probe.session.close()


def start(module, checkpoint, **params):
    ros_args = [arg for name, value in dict(checkpoint=checkpoint, num_threads=1, **params).items()
                for arg in ("-p", f"{name}:={value}")]
    return NodeProcess.module(f"paradigms_policy.ros.{module}", ros_args, DOMAIN_ID)


def wait(condition, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not condition():
        time.sleep(0.01)
    return condition()


def assert_clean_stop(node, number, times, not_printed=()):
    node.send(number, times)
    code, elapsed = node.wait_exit(BUDGET_S + 10.0)
    output = node.output()
    after = node.lines_after_signal()
    print(f"{signal.Signals(number).name} x{times}: exit code {code} after {elapsed:.2f} s")
    assert code == 0, f"exit code {code}:\n{output}"
    assert elapsed < BUDGET_S, f"took {elapsed:.2f} s:\n{output}"
    assert len(after) <= 1, f"more than one line after the signal: {after}"
    assert "Traceback" not in output and "terminate called" not in output, output
    for text in not_printed:  # the phase the signal was meant for had not ended
        assert text not in output, f"'{text}' printed: the signal came too late\n{output}"
    return elapsed


def run_case(node, ready_text, number, times, delay_s=0.0, not_printed=()):
    try:
        assert node.wait_for_line(ready_text, 60.0), f"'{ready_text}' never printed:\n{node.output()}"
        time.sleep(delay_s)
        return assert_clean_stop(node, number, times, not_printed)
    finally:
        node.close()


@pytest.mark.parametrize("number, times", VARIANTS)
def test_stop_while_loading_the_checkpoint(checkpoints, number, times):
    node = start("policy_node", checkpoints["slow"], sampler="sequential", warmup_runs=1)
    run_case(node, "loading the policy", number, times, not_printed=("warming up",))


@pytest.mark.parametrize("number, times", VARIANTS)
def test_stop_during_the_warm_up(checkpoints, number, times):
    node = start("policy_node", checkpoints["slow"], sampler="sequential", warmup_runs=1)
    run_case(node, "warming up", number, times, delay_s=0.3, not_printed=("policy ready",))


@pytest.mark.parametrize("number, times", VARIANTS)
def test_stop_during_an_inference(checkpoints, probe, number, times):
    node = start("policy_node", checkpoints["slow"], sampler="sequential", warmup_runs=0, diagnostics_rate=20.0,
                 observation_topic=FEED_TOPIC, max_observation_age_ms=1000.0)
    try:
        assert node.wait_for_line("policy ready", 60.0), node.output()
        probe.diagnostics.clear()
        # Two observations make a window: the chunk starts at once and takes seconds.
        assert wait(lambda: int(probe.last_value("observations_accepted") or 0) >= 2, 10.0), node.output()
        time.sleep(0.3)
        assert probe.last_value("inferences") == "0", "the chunk ended before the signal"
        elapsed = assert_clean_stop(node, number, times)
        # The chunk had seconds to go and the tear-down waits 3 s for the inference thread: it was dropped.
        assert elapsed < 3.0
    finally:
        node.close()


@pytest.mark.parametrize("number, times", VARIANTS)
def test_stop_when_idle(checkpoints, number, times):
    node = start("policy_node", checkpoints["tiny"], warmup_runs=1)
    run_case(node, "policy ready", number, times, delay_s=0.5)


@pytest.mark.parametrize("number, times", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_lifecycle_node_stops_while_configuring(checkpoints, probe, number, times):
    node = start("lifecycle_policy_node", checkpoints["slow"], sampler="sequential", warmup_runs=1)
    try:
        assert node.wait_for_line("unconfigured", 60.0), node.output()
        probe.transition(Transition.TRANSITION_CONFIGURE)
        assert node.wait_for_line("warming up", 30.0), node.output()
        time.sleep(0.3)
        assert_clean_stop(node, number, times, not_printed=("policy ready",))
    finally:
        node.close()


@pytest.mark.parametrize("number, times", [(signal.SIGINT, 2), (signal.SIGTERM, 1)])
def test_lifecycle_node_stops_when_active(checkpoints, probe, number, times):
    node = start("lifecycle_policy_node", checkpoints["tiny"], warmup_runs=1)
    try:
        assert node.wait_for_line("unconfigured", 60.0), node.output()
        configured = probe.transition(Transition.TRANSITION_CONFIGURE)
        assert wait(configured.done, 30.0) and configured.result().success, node.output()
        activated = probe.transition(Transition.TRANSITION_ACTIVATE)
        assert wait(activated.done, 10.0) and activated.result().success, node.output()
        assert node.wait_for_line("active: publishing", 5.0)
        assert_clean_stop(node, number, times)
    finally:
        node.close()
