"""`policy_node`: a Diffusion Policy as a ROS 2 node that turns observations into timed trajectories.

    observation (sensor_msgs/JointState, stamped; or std_msgs/Float32MultiArray, unstamped)
        --subscription: check, buffer the last n_obs_steps-->  worker thread: policy.predict
        --> joint_trajectory (trajectory_msgs/JointTrajectory, reliable)   + /diagnostics

Topics (names relative, so remappable, except /diagnostics):
    observation       subscribed, sensor-data QoS (best effort, keep last 5; accepts reliable
                      publishers too); JointState.position is the observation vector and
                      header.stamp its time; Float32MultiArray.data when observation_type is
                      float32_multi_array (unstamped: arrival time, no age/order checks)
    joint_trajectory  published, reliable, volatile, keep last 10
    /diagnostics      published, diagnostic_msgs/DiagnosticArray, reliable, at diagnostics_rate

Threads: the subscription callback only checks an observation and appends it to the window; the
inference runs on a worker thread of its own, so the executor keeps its rate while it runs. The
executor is single-threaded: every callback is short, and on a 2-core machine rclpy's
MultiThreadedExecutor delivered messages 40 ms late at the median (up to seconds) where the
single-threaded one took under 1 ms.

Timing (see `chunk_timing` for the conventions): action k of a chunk planned from the observation
stamped s is due at s + k / control_rate. When the chunk is ready at r, the actions due before r
are dropped, header.stamp is the due time of the first kept action and time_from_start grows by one
period per point. A chunk ready after s + deadline_ms is a deadline miss: it is counted and not
published, and the previous trajectory runs out (the controller holds its last point).

Round cap: for a parallel sampler (anything but `sequential`) the rounds of a chunk are capped at
min(round_cap if > 0, auto cap); with auto_round_cap the auto cap is the number of rounds that fit
in the time left until the deadline minus a 10% margin, from the measured time per round (90th
percentile of the last 10 chunks, seeded by the start-up warm-up). If not one round fits, the
inference is skipped and counted as a miss. The sequential sampler cannot be capped.

When to plan: the worker plans for the newest observation when no chunk is running, or when
waiting for the next observation would let the running chunk end before a new one can arrive
(expected arrival = the recent observation-to-ready latency, at most the deadline). The window's
observations must be at most 1.5 periods apart (the policy was trained on consecutive steps), so
after a gap, e.g. a simulation reset, the node waits for n_obs_steps fresh observations.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from collections import deque
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..control.timing import (NS_PER_MS, NS_PER_S, auto_round_cap, combine_caps, deadline_met, period_ns, plan_chunk, should_start_inference)
from ..control.parameters import (POLICY_NODE_PARAMETERS, ParamSpec, validate_against_policy, validate_policy_parameters)
from ..control.observations import REJECT_REASONS, ObservationGate, ObservationWindow
from ..control.statistics import RollingStats, RoundTimeEstimator, Throttle

# Parameters that may be changed while the node runs (validated by the on-set callback).
# Chunk records kept for statistics and the demo: enough for several episodes, bounded for long runs.
CHUNK_LOG_LENGTH = 500
RUNTIME_PARAMETERS = {spec.name for spec in POLICY_NODE_PARAMETERS if not spec.read_only}

RELIABLE_COMMANDS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


class StartupError(RuntimeError):
    """The node cannot start; the message is one line saying why."""


# ----------------------------------------------------------------------------------------------
# Helpers shared with the simulation node


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                                     additional_constraints=spec.constraints)
    if isinstance(spec.default, float) and (spec.minimum is not None or spec.maximum is not None):
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum if spec.minimum is not None else -math.inf),
            to_value=float(spec.maximum if spec.maximum is not None else math.inf), step=0.0)]
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool) and (
            spec.minimum is not None or spec.maximum is not None):
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum if spec.minimum is not None else -(2**63)),
            to_value=int(spec.maximum if spec.maximum is not None else 2**63 - 1), step=1)]
    return descriptor


def declare_parameters(node: Node, specs) -> dict[str, Any]:
    """Declare every spec'd parameter (values from parameter files/overrides); StartupError on a bad one."""
    values = {}
    for spec in specs:
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, descriptor_for(spec)).value
        except ParameterException as err:
            raise StartupError(f"invalid parameter '{spec.name}': {err.args[0]}") from None
    for name, value in values.items():
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            values[name] = list(value)
    return values


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_time_msg(ns: int) -> TimeMsg:
    return TimeMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def ns_to_duration_msg(ns: int) -> DurationMsg:
    return DurationMsg(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


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


def is_parallel(sampler: str) -> bool:
    return sampler != "sequential"


def sampler_options(settings: dict[str, Any], on_cuda: bool = False) -> dict[str, Any]:
    """The sampler's own options (its round cap is passed per chunk).

    `tolerance` is ParaDiGMS's (a fraction of each step's noise std); ParaTAA measures its residual
    differently and keeps its own default. On CUDA the window has a fixed shape, so the denoiser's
    CUDA graph captured at start-up serves every round.
    """
    if not is_parallel(settings["sampler"]):
        return {}
    options = {"window": settings["window"], "fixed_shape": on_cuda}
    if settings["sampler"] == "paradigms":
        options["tolerance"] = settings["tolerance"]
    return options


def known_samplers() -> list[str]:
    from ..samplers import SAMPLERS

    return list(SAMPLERS)


# ----------------------------------------------------------------------------------------------


class PolicyNode(Node):
    """The policy node. Parameters come from the parameter file / overrides (see `POLICY_NODE_PARAMETERS`).

    `policy` (optional) is an already loaded `DiffusionPolicy` to use instead of loading the
    `checkpoint` parameter (tests, embedding). Raises `StartupError` with a one-line message when
    a parameter is invalid or the checkpoint cannot be used; the node is then already destroyed.
    """

    def __init__(self, node_name: str = "policy_node", *, policy=None, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        try:
            self._setup(policy)
        except BaseException:
            self._stop.set()
            super().destroy_node()
            raise

    # -- start-up ---------------------------------------------------------------------------
    def _setup(self, policy) -> None:
        values = declare_parameters(self, POLICY_NODE_PARAMETERS)
        samplers = known_samplers()
        problems = validate_policy_parameters(values, samplers)
        if problems:
            raise StartupError("invalid parameters: " + "; ".join(problems))

        import torch

        # Leave a core to the executor and DDS: torch's spinning worker threads on every core
        # delayed callbacks and deliveries by hundreds of milliseconds on a 2-core machine.
        torch.set_num_threads(values["num_threads"] or max(1, (os.cpu_count() or 2) - 1))
        self.policy = policy if policy is not None else self._load_policy(values)
        config = self.policy.config
        if values["scheduler"] or values["num_inference_steps"]:
            changes = {}
            if values["scheduler"]:
                changes["name"] = values["scheduler"]
            if values["num_inference_steps"]:
                changes["num_inference_steps"] = values["num_inference_steps"]
            try:
                self.policy.set_scheduler(**changes)
            except Exception as err:  # ConfigError, diffusers errors
                raise StartupError(f"invalid scheduler override {changes}: {err}") from None
            config = self.policy.config
        problems = validate_against_policy(values, config.action_dim, config.horizon, config.n_obs_steps,
                                           config.n_action_steps)
        n_steps = values["n_action_steps"] or config.n_action_steps
        if n_steps < 2:
            problems.append("n_action_steps must be at least 2: action 0 is due at the observation's own stamp "
                            "and is always outdated by the time the chunk is ready")
        if problems:
            raise StartupError("invalid parameters for this checkpoint: " + "; ".join(problems))

        self._values = values
        self._settings = {name: values[name] for name in RUNTIME_PARAMETERS}
        self._applied_sampler: tuple | None = None
        self.n_action_steps = n_steps
        self.period_ns = period_ns(values["control_rate"])
        self.joint_names = list(values["joint_names"])
        self.action_low = np.asarray(values["action_min"], dtype=np.float64)
        self.action_high = np.asarray(values["action_max"], dtype=np.float64)
        self.stamped = values["observation_type"] == "joint_state"
        self._generator = None
        if values["seed"] >= 0:
            import torch

            self._generator = torch.Generator(device=self.policy.device).manual_seed(values["seed"])

        # Shared state (the lock guards everything the callbacks and the worker both touch).
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._gate = ObservationGate(config.obs_dim, int(values["max_observation_age_ms"] * NS_PER_MS), self.stamped)
        self._window = ObservationWindow(config.n_obs_steps, config.obs_dim)
        self._max_gap_ns = int(1.5 * self.period_ns)
        self._counters = {"observations_received": 0, "observations_accepted": 0, "chunks_published": 0,
                          "deadline_misses": 0, "miss_late": 0, "miss_no_time": 0, "miss_outdated": 0,
                          "inferences": 0, "inference_errors": 0, "actions_dropped_outdated": 0,
                          "actions_clipped": 0, "chunks_not_converged": 0, "windows_not_contiguous": 0}
        self._rejected = {reason: 0 for reason in REJECT_REASONS}
        self.latency = RollingStats(1000)  # inference latency (predict), seconds
        self.ready_age = RollingStats(1000)  # observation stamp -> chunk ready, seconds
        self.rounds = RollingStats(1000)
        # The most recent chunks (bounded: a node runs for days); chunk_count counts every chunk ever logged.
        self.chunk_log: deque[dict[str, Any]] = deque(maxlen=CHUNK_LOG_LENGTH)
        self.chunk_count = 0
        self._recent_ready_age: deque[int] = deque(maxlen=10)
        self._round_time = RoundTimeEstimator(10)
        self._last_round_cap: int | None = None
        self._chunk_end_ns: int | None = None
        self._throttle = Throttle(1.0)
        self._last_report = dict(self._counters, rejected=0)

        # On CUDA the denoiser replays CUDA graphs, captured during the warm-up (eager elsewhere).
        self.policy.use_cuda_graphs()
        self._apply_sampler(self._settings)
        self._warm_up(values["warmup_runs"])

        self._observation_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        try:
            self._trajectory_pub = self.create_publisher(JointTrajectory, values["trajectory_topic"], RELIABLE_COMMANDS)
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
            if self.stamped:
                self._subscription = self.create_subscription(
                    JointState, values["observation_topic"], self._on_joint_state, qos_profile_sensor_data,
                    callback_group=self._observation_group)
            else:
                self._subscription = self.create_subscription(
                    Float32MultiArray, values["observation_topic"], self._on_array, qos_profile_sensor_data,
                    callback_group=self._observation_group)
                self.get_logger().warning(
                    "observation_type float32_multi_array is unstamped: the arrival time stands in for the "
                    "observation's stamp, so its age and order cannot be checked", once=True)
        except Exception as err:  # invalid topic names
            raise StartupError(f"cannot create the node's topics: {err}") from None
        self._diagnostics_timer = self.create_timer(1.0 / values["diagnostics_rate"], self._publish_diagnostics,
                                                    callback_group=self._timer_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = threading.Thread(target=self._work, name=f"{self.get_name()}-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy ready: {self._describe_policy()}; sampler {self._settings['sampler']}, device "
            f"{self.policy.device}, {self.n_action_steps} actions per chunk at {values['control_rate']:g} Hz, "
            f"deadline {self._settings['deadline_ms']:g} ms; observations on "
            f"'{self._subscription.topic_name}', trajectories on '{self._trajectory_pub.topic_name}'")

    def _load_policy(self, values):
        from ..checkpoint import CheckpointError, load_policy
        from ..resources import shipped_checkpoint

        path = values["checkpoint"] or str(shipped_checkpoint())
        hint = "" if values["checkpoint"] else " (the 'checkpoint' parameter is empty, so the shipped Push-T " \
                                              "checkpoint was used; set 'checkpoint' to a policy checkpoint)"
        try:
            return load_policy(path, device=values["device"])
        except CheckpointError as err:
            raise StartupError(f"cannot load the policy checkpoint: {err}{hint}") from None
        except (ValueError, RuntimeError, OSError) as err:
            raise StartupError(f"cannot load the policy checkpoint {path}: {err}") from None

    def _describe_policy(self) -> str:
        c = self.policy.config
        return (f"obs_dim {c.obs_dim}, action_dim {c.action_dim}, horizon {c.horizon}, n_obs_steps {c.n_obs_steps}, "
                f"{c.scheduler.name} x {c.scheduler.num_inference_steps}")

    def _apply_sampler(self, settings) -> None:
        key = (settings["sampler"], settings["window"], settings["tolerance"])
        if key != self._applied_sampler:
            self.policy.set_sampler(settings["sampler"], **sampler_options(settings, self.policy.device.type == "cuda"))
            if self._applied_sampler is None or key[:2] != self._applied_sampler[:2]:
                self._round_time = RoundTimeEstimator(10)  # rounds of another sampler or window differ in cost
            self._applied_sampler = key

    def _warm_up(self, runs: int) -> None:
        import torch

        config = self.policy.config
        # The middle of the observation normaliser's range, repeated over the window.
        middle = self.policy.obs_normalizer.unnormalize(torch.zeros(config.obs_dim)).numpy()
        window = np.tile(middle, (config.n_obs_steps, 1)).astype(np.float32)
        sampler = self._settings["sampler"]
        options = {"max_rounds": None} if is_parallel(sampler) else {}
        for _ in range(runs):
            try:
                output = self.policy.predict(window, **options)
            except TypeError as err:
                raise StartupError(f"sampler '{sampler}' does not accept its options: {err}") from None
            except Exception as err:
                raise StartupError(f"the policy fails on a warm-up observation: {type(err).__name__}: {err}") from None
            self._round_time = RoundTimeEstimator(10)
            self._round_time.add(output.latency_s, output.stats.rounds)

    # -- parameters at run time ----------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        changed = {p.name: p.value for p in parameters if p.name in RUNTIME_PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        merged = dict(self._values, **changed)
        c = self.policy.config
        problems = validate_policy_parameters(merged, known_samplers()) or validate_against_policy(
            merged, c.action_dim, c.horizon, c.n_obs_steps, c.n_action_steps)
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        with self._lock:
            self._values = merged
            self._settings = {name: merged[name] for name in RUNTIME_PARAMETERS}
            self._gate.max_age_ns = int(merged["max_observation_age_ms"] * NS_PER_MS)
        return SetParametersResult(successful=True)

    # -- observations (executor thread) ----------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_joint_state(self, msg: JointState) -> None:
        self._accept(msg.position, stamp_to_ns(msg.header.stamp))

    def _on_array(self, msg: Float32MultiArray) -> None:
        self._accept(msg.data, None)

    def _accept(self, values, stamp_ns: int | None) -> None:
        try:
            now = self._now_ns()
            vector = np.asarray(values, dtype=np.float64).reshape(-1)
            with self._lock:
                self._counters["observations_received"] += 1
                verdict = self._gate.check(vector, now if stamp_ns is None else stamp_ns, now)
                if verdict.accepted:
                    self._counters["observations_accepted"] += 1
                    self._window.push(vector, now if stamp_ns is None else stamp_ns)
                    self._wakeup.notify()
                else:
                    self._rejected[verdict.reason] += 1
            if not verdict.accepted and self._throttle.allow(f"reject:{verdict.reason}", now):
                self.get_logger().warning(f"observation rejected ({verdict.reason}): {verdict.message}; "
                                          "no action is planned from it")
        except Exception as err:  # never let bad input kill the node
            if self._throttle.allow("reject:error", self._now_ns()):
                self.get_logger().error(f"observation could not be handled: {type(err).__name__}: {err}")

    # -- inference (worker thread) -----------------------------------------------------------------
    def _work(self) -> None:
        seen = 0
        while not self._stop.is_set():
            with self._wakeup:
                self._wakeup.wait_for(lambda: self._stop.is_set() or self._window.sequence != seen, timeout=0.5)
                if self._stop.is_set():
                    return
                if self._window.sequence == seen:
                    continue
                seen = self._window.sequence
                snapshot = self._window.snapshot(self._max_gap_ns)
                settings = dict(self._settings)
                if snapshot is None and len(self._window) == self._window.n_obs_steps:
                    self._counters["windows_not_contiguous"] += 1
            if snapshot is None:
                continue
            observations, stamp = snapshot
            deadline_ns = int(settings["deadline_ms"] * NS_PER_MS)
            lead = min(deadline_ns, max(self._recent_ready_age)) if self._recent_ready_age else deadline_ns
            if not should_start_inference(stamp, self._chunk_end_ns, self.period_ns, lead,
                                          settings["plan_ahead_periods"]):
                continue
            try:
                self._infer(observations, stamp, settings, deadline_ns)
            except Exception as err:  # an inference failure must not stop the node
                with self._lock:
                    self._counters["inference_errors"] += 1
                if self._throttle.allow("inference_error", self._now_ns()):
                    self.get_logger().error(f"inference failed: {type(err).__name__}: {err}")

    def _infer(self, observations: np.ndarray, stamp: int, settings: dict[str, Any], deadline_ns: int) -> None:
        self._apply_sampler(settings)
        started = self._now_ns()
        budget = stamp + deadline_ns - started
        options: dict[str, Any] = {}
        cap = None
        if is_parallel(settings["sampler"]):
            cap = settings["round_cap"] or None
            if settings["auto_round_cap"]:
                auto = auto_round_cap(budget, self._round_time.estimate(), deadline_ns)
                if auto == 0 or budget <= 0:
                    self._round_time.forget_slowest()
                    self._miss("no_time", stamp, None, f"only {budget / NS_PER_MS:.1f} ms left before the deadline, "
                                                       "not enough for one round")
                    return
                cap = combine_caps(cap, auto)
            options["max_rounds"] = cap
        elif budget <= 0:
            self._miss("no_time", stamp, None, "the deadline passed before the inference could start")
            return
        self._last_round_cap = cap

        output = self.policy.predict(observations, generator=self._generator, **options)
        ready = self._now_ns()
        stats = output.stats
        self._recent_ready_age.append(ready - stamp)
        with self._lock:
            self._round_time.add(output.latency_s, stats.rounds)
            self._counters["inferences"] += 1
            self._counters["chunks_not_converged"] += int(not stats.converged)
            self.latency.add(output.latency_s)
            self.ready_age.add((ready - stamp) / NS_PER_S)
            self.rounds.add(stats.rounds)
        record = {"stamp_ns": stamp, "latency_s": output.latency_s, "ready_age_s": (ready - stamp) / NS_PER_S,
                  "rounds": stats.rounds, "model_evals": stats.model_evals, "converged": stats.converged,
                  "round_cap": cap, "published": False}

        if not deadline_met(stamp, ready, deadline_ns):
            self._miss("late", stamp, record, f"chunk ready {(ready - stamp) / NS_PER_MS:.1f} ms after its "
                                              f"observation, deadline {deadline_ns / NS_PER_MS:g} ms")
            return
        actions = self.policy.executed_actions(output.action_horizon, self.n_action_steps)
        chunk = plan_chunk(actions, stamp, ready, self.period_ns, self.action_low, self.action_high)
        if chunk is None:
            self._miss("outdated", stamp, record, "every action of the chunk was already due")
            return
        if self._stop.is_set():
            return
        self._trajectory_pub.publish(trajectory_message(chunk, self.joint_names))
        self._chunk_end_ns = chunk.end_ns
        record.update(published=True, first_index=chunk.first_index, points=len(chunk))
        with self._lock:
            self._counters["chunks_published"] += 1
            self._counters["actions_dropped_outdated"] += chunk.dropped
            self._counters["actions_clipped"] += chunk.clipped
            self._log_chunk(record)

    def _log_chunk(self, record: dict[str, Any]) -> None:
        self.chunk_log.append(record)
        self.chunk_count += 1

    def _miss(self, kind: str, stamp: int, record: dict | None, message: str) -> None:
        with self._lock:
            self._counters["deadline_misses"] += 1
            self._counters[f"miss_{kind}"] += 1
            if record is None:
                record = {"stamp_ns": stamp, "latency_s": None, "ready_age_s": None, "rounds": 0,
                          "model_evals": 0, "converged": False, "round_cap": None}
            record.update(published=False, miss=kind)
            self._log_chunk(record)
        if self._throttle.allow(f"miss:{kind}", self._now_ns()):
            self.get_logger().warning(f"deadline miss ({kind}): {message}; nothing published, the previous "
                                      "trajectory keeps running out")

    # -- diagnostics -----------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """Counters and latency statistics (latencies in milliseconds)."""
        with self._lock:
            stats: dict[str, Any] = dict(self._counters)
            stats.update({f"rejected_{reason}": count for reason, count in self._rejected.items()})
            stats["observations_rejected"] = sum(self._rejected.values())

            def ms(value):
                return None if value is None else value * 1000.0

            stats.update(latency_p50_ms=ms(self.latency.p50()), latency_p99_ms=ms(self.latency.p99()),
                         latency_max_ms=ms(self.latency.max()), ready_age_p50_ms=ms(self.ready_age.p50()),
                         ready_age_p99_ms=ms(self.ready_age.p99()), rounds_p50=self.rounds.p50(),
                         rounds_max=self.rounds.max(), rounds_mean=self.rounds.mean())
            estimate = self._round_time.estimate()
        stats.update(round_cap_last=self._last_round_cap, round_time_ms=None if estimate is None else estimate * 1000.0,
                     sampler=self._settings["sampler"], device=str(self.policy.device))
        return stats

    def _publish_diagnostics(self) -> None:
        try:
            stats = self.statistics()
            new_misses = stats["deadline_misses"] - self._last_report["deadline_misses"]
            new_rejects = stats["observations_rejected"] - self._last_report["rejected"]
            new_errors = stats["inference_errors"] - self._last_report["inference_errors"]
            self._last_report = dict(stats, rejected=stats["observations_rejected"])
            status = DiagnosticStatus()
            status.name = f"{self.get_name()}: policy inference"
            status.hardware_id = stats["device"]
            if new_errors:
                status.level, status.message = DiagnosticStatus.ERROR, f"{new_errors} inference error(s)"
            elif new_misses or new_rejects:
                status.level = DiagnosticStatus.WARN
                status.message = (f"{new_misses} deadline miss(es), {new_rejects} rejected observation(s) "
                                  "since the last report")
            else:
                status.level, status.message = DiagnosticStatus.OK, "ok"

            def text(value):
                if value is None:
                    return "n/a"
                if isinstance(value, float):
                    return f"{value:.3f}"
                return str(value)

            status.values = [KeyValue(key=key, value=text(value)) for key, value in stats.items()]
            array = DiagnosticArray()
            array.header.stamp = self.get_clock().now().to_msg()
            array.status = [status]
            self._diagnostics_pub.publish(array)
        except Exception as err:
            if self._throttle.allow("diagnostics", self._now_ns()):
                self.get_logger().error(f"diagnostics failed: {type(err).__name__}: {err}")

    # -- shutdown --------------------------------------------------------------------------------
    def destroy_node(self) -> None:
        """Stop the worker (after its current inference, which is then not published) and destroy the node."""
        self._stop.set()
        if getattr(self, "_wakeup", None) is not None:
            with self._wakeup:
                self._wakeup.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join()
        super().destroy_node()


def spin_node(node: Node) -> None:
    """Spin `node` on a SingleThreadedExecutor until Ctrl-C or shutdown, then tear everything down."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for step in (executor.shutdown, node.destroy_node, rclpy.try_shutdown):
            try:
                step()
            except KeyboardInterrupt:  # a second Ctrl-C while shutting down
                pass


def tear_down(executor, spinner, nodes, context) -> None:
    """Stop an in-process executor and its spinning thread, destroy the nodes (newest first), shut down."""
    if executor is not None:
        executor.shutdown()
    if spinner is not None:
        spinner.join(timeout=5.0)
    for node in reversed(nodes):
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def run_node(make_node, name: str, args: list[str] | None) -> int:
    """The body of a node executable: start, spin, and turn a start-up failure into one fatal line."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except StartupError as err:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {err}")
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 130
    spin_node(node)
    return 0


def main(args: list[str] | None = None) -> int:
    """`ros2 run paradigms_policy policy_node [--ros-args --params-file config/policy.yaml ...]`."""
    return run_node(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    sys.exit(main())
