"""Integration tests of policy_node over real DDS on loopback (rclpy from PyPI or a ROS 2 install).

Each test starts its own `LocalSession` in a test-unique ROS domain with LOCALHOST discovery, a
small random policy checkpoint (DDIM, 10 steps) and a probe node that publishes observations and
records what the policy node publishes.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# Discovery settings must be in place before any rclpy.init.
DOMAIN_ID = 1 + os.getpid() % 100
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (pip install 'paradigms_policy[ros]' "
                                            "or source a ROS 2 install)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from paradigms_policy.checkpoint import load_policy, save_policy  # noqa: E402
from paradigms_policy.config import PolicyConfig, SchedulerConfig  # noqa: E402
from paradigms_policy.control.sampling import SamplerChoice  # noqa: E402
from paradigms_policy.model import ConditionalUnet1D  # noqa: E402
from paradigms_policy.normalizer import AffineNormalizer  # noqa: E402
from paradigms_policy.ros.common import RELIABLE_COMMANDS, LocalSession, StartupError, parameter_overrides  # noqa: E402
from paradigms_policy.ros.policy_node import PolicyNode  # noqa: E402
from paradigms_policy.samplers import paradigms, parataa  # noqa: E402
from conftest import wait_for  # noqa: E402

pytestmark = pytest.mark.dds

REPO_ROOT = Path(__file__).resolve().parents[2]
PERIOD_NS = 100_000_000  # control_rate 10 Hz
MS = 1_000_000


def stamp_ns(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    config = PolicyConfig.for_shapes(20, 2, down_dims=(16, 32), diffusion_step_embed_dim=16, n_groups=8,
                                     scheduler=SchedulerConfig(name="ddim", num_inference_steps=10))
    model = ConditionalUnet1D.from_config(config.unet)
    pixels = AffineNormalizer.from_min_max(np.zeros(20), np.full(20, 512.0))
    actions = AffineNormalizer.from_min_max(np.zeros(2), np.full(2, 512.0))
    return save_policy(tmp_path_factory.mktemp("ckpt") / "tiny", config, model, pixels, actions)


class Harness:
    """A LocalSession with a probe node that publishes observations and records what comes back."""

    def __init__(self, checkpoint):
        self.checkpoint = str(checkpoint)
        self.session = LocalSession(DOMAIN_ID, name="test")
        self.probe = self.session.create_node("probe")
        self.trajectories = []  # (message, receive time ns)
        self.diagnostics = []
        self.trajectory_sub = self.probe.create_subscription(JointTrajectory, "joint_trajectory", self._on_trajectory,
                                                             RELIABLE_COMMANDS)
        self.probe.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        # Readers matched by each observation writer itself (the graph can show a subscriber before
        # the writer has matched it, and a sample published in between is lost).
        self.matched_readers = {}
        self.obs_pub = self.probe.create_publisher(JointState, "observation", 10,
                                                   event_callbacks=self._count_matches("/observation"))
        self.array_pub = self.probe.create_publisher(Float32MultiArray, "observation_array", 10,
                                                     event_callbacks=self._count_matches("/observation_array"))

    def _count_matches(self, topic):
        def on_matched(info):
            self.matched_readers[topic] = info.current_count

        return PublisherEventCallbacks(matched=on_matched)

    def _on_trajectory(self, msg):
        self.trajectories.append((msg, self.now()))

    def now(self):
        return self.probe.get_clock().now().nanoseconds

    def policy_node(self, **params):
        values = {"checkpoint": self.checkpoint, "num_threads": 1, "warmup_runs": 1, "diagnostics_rate": 20.0,
                  "sampler": "sequential"}
        values.update(params)  # None: leave the parameter at its declared default
        values = {name: value for name, value in values.items() if value is not None}
        return self.session.add(PolicyNode(context=self.session.context,
                                           parameter_overrides=parameter_overrides(values)))

    def start(self, node, publisher=None):
        publisher = publisher or self.obs_pub
        self.session.start()

        # Both ends of both topics must have matched: a best-effort reader drops what arrives before.
        def matched():
            stats = node.statistics()
            return (publisher.get_subscription_count() >= 1 and self.matched_readers.get(publisher.topic_name, 0) >= 1
                    and stats["observation_publishers"] >= 1 and stats["trajectory_subscribers"] >= 1
                    and self.trajectory_sub.get_publisher_count() >= 1)

        assert wait_for(matched), "discovery did not complete"

    def publish(self, values, stamp=None):
        msg = JointState()
        stamp = self.now() if stamp is None else stamp
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.position = [float(v) for v in values]
        self.obs_pub.publish(msg)
        return stamp

    def close(self):
        self.session.close()


@pytest.fixture
def ros(checkpoint):
    harness = Harness(checkpoint)
    yield harness
    harness.close()


def obs(value=256.0):
    return np.full(20, value)


def publish_pair(ros, gap_ns=PERIOD_NS):
    """Two observations one period apart (stamped when published); returns their stamps."""
    first = ros.publish(obs(250.0))
    while ros.now() < first + gap_ns:
        time.sleep(0.002)
    second = ros.publish(obs(260.0), stamp=first + gap_ns)
    return first, second


def check_trajectory(msg, obs_stamp, received_ns, deadline_ms, joint_names=("agent_x", "agent_y")):
    assert list(msg.joint_names) == list(joint_names)
    assert 1 <= len(msg.points) <= 7
    offsets = [stamp_ns(p.time_from_start) for p in msg.points]
    assert offsets == [j * PERIOD_NS for j in range(len(msg.points))], "time_from_start must grow by 1/control_rate"
    # header.stamp = the due time of the first kept action = obs stamp + k periods, k >= 1 (action 0 is outdated).
    lead = stamp_ns(msg.header.stamp) - obs_stamp
    assert lead % PERIOD_NS == 0 and PERIOD_NS <= lead <= deadline_ms * MS + PERIOD_NS
    assert len(msg.points) == 8 - lead // PERIOD_NS, "only the outdated actions may be dropped"
    assert stamp_ns(msg.header.stamp) >= received_ns - 50 * MS, "the first point must not be in the past"
    assert received_ns <= obs_stamp + (deadline_ms + 50) * MS, "published after the deadline"
    for point in msg.points:
        assert len(point.positions) == len(joint_names)
        assert all(np.isfinite(point.positions)) and all(0.0 <= v <= 512.0 for v in point.positions)


def test_publishes_valid_trajectory_within_deadline(ros):
    started = time.monotonic()
    node = ros.policy_node(deadline_ms=500.0)
    ros.start(node)
    _, second = publish_pair(ros)
    assert wait_for(lambda: ros.trajectories, timeout=3.0), "no trajectory published"
    msg, received = ros.trajectories[0]
    check_trajectory(msg, second, received, 500.0)
    stats = node.statistics()
    assert stats["chunks_published"] == 1 and stats["deadline_misses"] == 0
    assert stats["observations_accepted"] == 2
    assert time.monotonic() - started < 10


def test_parallel_sampler_publishes_and_fixed_round_cap_applies(ros):
    node = ros.policy_node(sampler="paradigms", window=4, tolerance=0.0, round_cap=2, auto_round_cap=False)
    ros.start(node)
    _, second = publish_pair(ros)
    assert wait_for(lambda: ros.trajectories, timeout=3.0)
    msg, received = ros.trajectories[0]
    check_trajectory(msg, second, received, 500.0)
    record = node.ledger.records()[-1]
    assert record["published"] and record["rounds"] == 2 and record["round_cap"] == 2 and not record["converged"]


def test_bad_observations_rejected_without_crash_or_publication(ros):
    # An age limit well above DDS delivery on a loaded machine: only the 10 s old one is stale.
    node = ros.policy_node(max_observation_age_ms=2000.0)
    ros.start(node)
    first = ros.publish(obs())
    bad_nan, bad_inf = obs(), obs()
    bad_nan[3], bad_inf[7] = np.nan, np.inf
    # The subscription keeps only a few messages (sensor-data QoS): pace the bad ones a little.
    for values, stamp in [(np.full(19, 256.0), None),  # wrong length
                          (bad_nan, None), (bad_inf, None),  # NaN, Inf
                          (obs(), ros.now() - 10_000 * MS),  # stale
                          (obs(), first - 50 * MS),  # out of order (older than the last accepted)
                          (obs(), first),  # duplicate stamp
                          (obs(), 0),  # no stamp
                          (obs(), ros.now() + 20_000 * MS)]:  # from the future
        ros.publish(values, stamp=stamp)
        time.sleep(0.005)
    assert wait_for(lambda: node.statistics()["observations_received"] == 9, timeout=3.0)
    stats = node.statistics()
    assert stats["observations_accepted"] == 1
    assert stats["rejected_wrong_length"] == 1
    assert stats["rejected_non_finite"] == 2
    assert stats["rejected_stale"] == 1
    assert stats["rejected_out_of_order"] == 2
    assert stats["rejected_no_stamp"] == 1
    assert stats["rejected_future"] == 1
    time.sleep(0.2)
    assert ros.trajectories == [], "a rejected observation led to a publication"
    assert stats["inferences"] == 0
    # The node is alive and a good observation one period later completes the window.
    while ros.now() < first + PERIOD_NS:
        time.sleep(0.002)
    second = ros.publish(obs(), stamp=first + PERIOD_NS)
    assert wait_for(lambda: ros.trajectories, timeout=3.0), "the node stopped working after bad input"
    check_trajectory(ros.trajectories[0][0], second, ros.trajectories[0][1], 500.0)


def test_deadline_miss_is_counted_and_nothing_stale_is_published(ros):
    node = ros.policy_node(deadline_ms=300.0)
    original = node.policy.model.denoise

    def slow_denoise(x, timesteps, condition):
        time.sleep(0.06)  # 10 steps -> 0.6 s, twice the deadline
        return original(x, timesteps, condition)

    node.policy.model.denoise = slow_denoise
    ros.start(node)
    publish_pair(ros)
    assert wait_for(lambda: node.statistics()["deadline_misses"] >= 1, timeout=4.0), "no deadline miss counted"
    time.sleep(0.1)
    stats = node.statistics()
    assert stats["miss_late"] == 1 and stats["chunks_published"] == 0
    assert ros.trajectories == [], "a late chunk was published"
    assert wait_for(lambda: any(_diagnostic_value(d, "deadline_misses") == "1" for d in ros.diagnostics), timeout=2.0)


def test_auto_round_cap_meets_the_deadline(checkpoint, monkeypatch):
    original = ConditionalUnet1D.denoise

    def slow_denoise(self, x, timesteps, condition):
        time.sleep(0.04)  # one batched call per round: ~10 rounds uncapped = 0.4 s
        return original(self, x, timesteps, condition)

    monkeypatch.setattr(ConditionalUnet1D, "denoise", slow_denoise)  # before the warm-up measures a round
    harness = Harness(checkpoint)
    try:
        node = harness.policy_node(sampler="paradigms", window=4, tolerance=0.0, deadline_ms=250.0)
        harness.start(node)
        stamps = []
        end = time.monotonic() + 3.0
        while time.monotonic() < end and not harness.trajectories:
            stamps.append(harness.publish(obs(250.0 + len(stamps))))
            time.sleep(0.1)
        assert harness.trajectories, f"no trajectory in time; {node.statistics()}"
        msg, received = harness.trajectories[0]
        source = [s for s in stamps if (stamp_ns(msg.header.stamp) - s) % PERIOD_NS == 0
                  and 0 < stamp_ns(msg.header.stamp) - s <= 350 * MS]
        assert source, "the trajectory's stamp is not a whole number of periods after an observation"
        assert received <= source[-1] + 300 * MS
        published = [r for r in node.ledger.records() if r["published"]]
        assert published and all(r["round_cap"] is not None and r["rounds"] <= r["round_cap"] < 10 for r in published)
        assert all(r["ready_age_s"] <= 0.25 for r in published)
    finally:
        harness.close()


def _diagnostic_value(array, key):
    for status in array.status:
        for item in status.values:
            if item.key == key:
                return item.value
    return None


def test_diagnostics_arrive(ros):
    node = ros.policy_node()
    ros.start(node)
    publish_pair(ros)
    ros.publish(np.full(3, 1.0))
    assert wait_for(lambda: ros.trajectories, timeout=3.0)
    assert wait_for(lambda: any(_diagnostic_value(d, "observations_rejected") == "1"
                                and _diagnostic_value(d, "chunks_published") == "1" for d in ros.diagnostics), 3.0)
    array = next(d for d in ros.diagnostics if _diagnostic_value(d, "chunks_published") == "1")
    status = array.status[0]
    assert status.name == "policy_node: policy inference" and status.hardware_id == str(node.policy.device)
    values = {item.key: item.value for item in status.values}
    assert (values["rejected_wrong_length"], values["deadline_misses"], values["inferences"]) == ("1", "0", "1")
    assert (values["sampler"], values["window"], values["tolerance"]) == ("sequential", "n/a", "n/a")
    assert values["rounds_p50"] == "10.000" and values["deadline_ms"] == "500.000"
    assert 0 < float(values["latency_p50_ms"]) <= float(values["ready_age_p50_ms"]) < 500


def test_unstamped_float32_multi_array_observations(ros):
    node = ros.policy_node(observation_type="float32_multi_array", observation_topic="observation_array")
    ros.start(node, ros.array_pub)
    ros.array_pub.publish(Float32MultiArray(data=[1.0] * 5))  # wrong length: rejected
    ros.array_pub.publish(Float32MultiArray(data=[250.0] * 20))
    time.sleep(0.1)
    ros.array_pub.publish(Float32MultiArray(data=[260.0] * 20))
    assert wait_for(lambda: ros.trajectories, timeout=3.0)
    stats = node.statistics()
    assert stats["rejected_wrong_length"] == 1 and stats["observations_accepted"] == 2


def test_runtime_parameter_changes_are_validated(ros):
    node = ros.policy_node()
    assert node.statistics()["deadline_ms"] == 500.0
    assert node.set_parameters([Parameter("deadline_ms", value=300.0)])[0].successful
    assert node.statistics()["deadline_ms"] == 300.0
    result = node.set_parameters([Parameter("deadline_ms", value=900.0)])[0]  # beyond the chunk's 700 ms span
    assert not result.successful and "deadline_ms" in result.reason
    assert not node.set_parameters([Parameter("sampler", value="nope")])[0].successful
    assert not node.set_parameters([Parameter("tolerance", value=-0.5)])[0].successful  # -1 or >= 0
    assert not node.set_parameters([Parameter("checkpoint", value="/elsewhere")])[0].successful  # read-only
    assert node.statistics()["deadline_ms"] == 300.0  # the refused changes left the settings alone


def test_missing_checkpoint_fails_startup_with_clear_message(ros, tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(StartupError) as info:
        ros.policy_node(checkpoint=str(missing))
    message = str(info.value)
    assert str(missing) in message and "no such file" in message and "\n" not in message

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(StartupError, match="cannot read JSON"):
        ros.policy_node(checkpoint=str(broken))


@pytest.mark.parametrize("params, expected", [
    ({"sampler": "nope"}, "sampler must be one of"),
    ({"joint_names": ["a", "b", "c"]}, "joint_names has 3 entries"),
    ({"action_min": [10.0, 10.0], "action_max": [5.0, 600.0]}, "action_min must be below action_max"),
    ({"device": "tpu"}, "device must be"),
    ({"deadline_ms": 800.0}, "deadline_ms 800 must be below"),
    ({"tolerance": -0.5}, "tolerance must be -1"),
    ({"control_rate": 10}, "invalid parameter 'control_rate'"),
])
def test_invalid_parameters_fail_startup(ros, params, expected):
    with pytest.raises(StartupError, match=expected):
        ros.policy_node(**params)


WIDE_BOUNDS = {"action_min": [-1e4, -1e4], "action_max": [1e4, 1e4]}  # nothing clipped


def first_trajectory(ros, node):
    """(positions of the first published trajectory, index of its first action in the chunk, its chunk record)
    for the observation pair 250, 260."""
    ros.start(node)
    _, second = publish_pair(ros)
    assert wait_for(lambda: ros.trajectories, timeout=3.0), "no trajectory published"
    msg, _ = ros.trajectories[0]
    first_index = (stamp_ns(msg.header.stamp) - second) // PERIOD_NS
    return np.array([point.positions for point in msg.points]), first_index, node.ledger.records()[-1]


@pytest.mark.parametrize("tolerance, rounds", [(0.0, 10), (100.0, 1)])
def test_tolerance_reaches_parataa(ros, checkpoint, tolerance, rounds):
    """At tolerance 0 ParaTAA gives the sequential answer for the seeded noise (in 10 rounds, as at its
    default 2e-4 on this model); at 100 it stops after one round."""
    node = ros.policy_node(sampler="parataa", tolerance=tolerance, seed=5, auto_round_cap=False, **WIDE_BOUNDS)
    on_cuda = node.policy.device.type == "cuda"
    assert node.sampler_choice == SamplerChoice("parataa", None, tolerance, fixed_shape=on_cuda)
    assert node.policy.sampler_options == {"window": None, "tolerance": tolerance, "fixed_shape": on_cuda}
    positions, first_index, record = first_trajectory(ros, node)
    sequential = load_policy(checkpoint, device=str(node.policy.device)).predict(
        np.stack([obs(250.0), obs(260.0)]), generator=torch.Generator(node.policy.device).manual_seed(5))
    deviation = np.abs(positions - sequential.actions[first_index:]).max()
    assert record["rounds"] == rounds and record["published"]
    assert deviation < 0.01 if tolerance == 0.0 else deviation > 1.0
    stats = node.statistics()
    assert (stats["sampler"], stats["window"], stats["tolerance"]) == ("parataa", "whole chain", tolerance)


@pytest.mark.parametrize("sampler, window, tolerance", [
    ("paradigms", paradigms.DEFAULT_WINDOW, paradigms.DEFAULT_TOLERANCE),
    ("parataa", parataa.DEFAULT_WINDOW, parataa.DEFAULT_TOLERANCE),
])
def test_window_0_and_tolerance_minus_1_are_each_samplers_defaults(ros, sampler, window, tolerance):
    """On a 20-step chain a one-round chunk evaluates the default window: 16 states for ParaDiGMS, the
    whole chain (20) for ParaTAA."""
    node = ros.policy_node(sampler=sampler, window=0, tolerance=-1.0, num_inference_steps=20, round_cap=1,
                           auto_round_cap=False)
    on_cuda = node.policy.device.type == "cuda"
    assert node.sampler_choice == SamplerChoice(sampler, window, tolerance, fixed_shape=on_cuda)
    _, _, record = first_trajectory(ros, node)
    assert (record["rounds"], record["model_evals"]) == (1, window or 20)
    stats = node.statistics()
    assert (stats["window"], stats["tolerance"]) == (str(window) if window else "whole chain", tolerance)


def test_the_default_sampler_is_parataa(ros):
    node = ros.policy_node(sampler=None, warmup_runs=0)  # the declared default
    assert node.sampler_choice.name == "parataa"
    assert (node.sampler_choice.window, node.sampler_choice.tolerance) == (None, parataa.DEFAULT_TOLERANCE)


def test_policy_node_executable_reports_missing_checkpoint_in_one_line(tmp_path):
    missing = tmp_path / "absent_checkpoint"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "paradigms_policy.ros.policy_node", "--ros-args", "-p",
                             f"checkpoint:={missing}"], capture_output=True, text=True, timeout=60, env=env,
                            cwd=str(REPO_ROOT))
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    problems = [line for line in lines if "[INFO]" not in line]  # progress lines: "loading the policy from ..."
    assert len(problems) == 1, lines
    assert str(missing) in problems[0] and "cannot start" in problems[0] and "[FATAL]" in problems[0]


def stream_observations(ros, until, seconds):
    """Observations one period apart, stamped when published, until `until()` or `seconds` pass."""
    stamp = ros.now()
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        ros.publish(obs(250.0 + (stamp // PERIOD_NS) % 20), stamp=stamp)
        stamp += PERIOD_NS
        while ros.now() < stamp:
            time.sleep(0.002)


def continuations(trajectories):
    """(new chunk's first point, the running trajectory's point due at that time) for consecutive trajectories."""
    pairs = []
    for (old, _), (new, _) in zip(trajectories, trajectories[1:]):
        old_points = {stamp_ns(old.header.stamp) + stamp_ns(p.time_from_start): list(p.positions) for p in old.points}
        first = stamp_ns(new.header.stamp)
        if first in old_points:
            pairs.append((list(new.points[0].positions), old_points[first]))
    return pairs


@pytest.mark.parametrize("chunking, overlap", [(True, "hard"), (True, "soft"), (True, "guided"), (False, "hard")])
def test_real_time_chunking_continues_the_running_trajectory(ros, chunking, overlap):
    node = ros.policy_node(real_time_chunking=chunking, real_time_chunking_overlap=overlap, deadline_ms=600.0,
                           max_observation_age_ms=0.0)
    original = node.policy.model.denoise

    def slow_denoise(x, timesteps, condition):
        time.sleep(0.013)  # 10 steps: a chunk is ready about 1.5 periods after its observation
        return original(x, timesteps, condition)

    node.policy.model.denoise = slow_denoise
    sample_normalized, used = node.policy.sample_normalized, []

    def recording_sample(*args, **options):
        used.append(options)
        return sample_normalized(*args, **options)

    node.policy.sample_normalized = recording_sample
    ros.start(node)
    stream_observations(ros, until=lambda: len(continuations(ros.trajectories)) >= 3, seconds=8.0)
    pairs = continuations(ros.trajectories)
    inpainted = [options for options in used if "committed_actions" in options]
    assert bool(inpainted) == chunking
    if overlap == "soft":  # the running prediction after the held commands is pulled too
        assert all(len(o["committed_positions"]) > o["committed_weights"].count(1.0) for o in inpainted)
    if overlap == "guided":
        assert all(o["guidance"].weights.count_nonzero() > len(o["committed_positions"]) for o in inpainted)
    assert len(pairs) >= 3, f"{len(ros.trajectories)} trajectories, {len(pairs)} overlapping"
    gaps = [np.abs(np.subtract(new, old)).max() for new, old in pairs]
    if chunking:  # where it takes over, the new trajectory commands what the running one did
        assert max(gaps) < 1e-2, gaps
    else:  # fresh noise and no inpainting: the new chunk starts elsewhere
        assert min(gaps) > 1e-2, gaps
    assert node.statistics()["chunks_published"] == len(ros.trajectories)
