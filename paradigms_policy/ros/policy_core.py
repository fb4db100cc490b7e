"""The policy node's work, shared by `PolicyNode` and `LifecyclePolicyNode` (see policy_node.py).

`PolicyBehaviour` is mixed into a rclpy Node (or LifecycleNode) and gives it its life in four
steps: `_declare_values` (parameters), `_bring_up` (load and check the policy, warm up, create
the topics, start the inference thread), `_set_active` (accept observations and publish, or stop
both at once and drop the running chunk) and `_release` (stop the thread, destroy the topics,
drop the model). `request_stop` ends the running chunk within one network evaluation. The
observation and camera callbacks, which build the window's steps, are in image_inputs.py.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from ..control.diagnostics import DiagnosticsReporter
from ..control.ledger import ChunkLedger
from ..control.observations import ObservationGate, ObservationWindow, neutral_window, step_layout
from ..control.parameters import (POLICY_NODE_PARAMETERS, validate_against_policy, validate_cameras,
                                  validate_policy_parameters)
from ..control.sampling import ChunkAbandoned, SamplerChoice, abandonable, resolve_sampler
from ..control.statistics import RoundTimeEstimator, Throttle
from ..control.chunking import committed_actions, overlap_actions, planned_delay_steps
from ..control.timing import NS_PER_MS, deadline_met, period_ns, plan_chunk, plan_rounds, should_start_inference
from .common import DIAGNOSTICS_QOS, JOIN_TIMEOUT_S, RELIABLE_COMMANDS, SENSOR_QOS, StartupError, declare_parameters
from .image_inputs import ObservationInputs
from .messages import diagnostic_array, trajectory_message

# Parameters that may be changed while the node runs (validated by the on-set callback).
RUNTIME_PARAMETERS = {spec.name for spec in POLICY_NODE_PARAMETERS if not spec.read_only}


class PolicyBehaviour(ObservationInputs):
    """Observations in, timed trajectories out; mixed into a Node (see the module docstring)."""

    policy = None

    def _declare_values(self) -> dict[str, Any]:
        """Declare the parameters; their values, or StartupError with every problem."""
        values = declare_parameters(self, POLICY_NODE_PARAMETERS)
        self._check_values(values)
        return values

    @staticmethod
    def _check_values(values: dict[str, Any]) -> None:
        problems = validate_policy_parameters(values)
        if problems:
            raise StartupError("invalid parameters: " + "; ".join(problems))

    def _init_behaviour(self) -> None:
        self._stopping = threading.Event()  # the process is ending: no chunk may run any more
        self._running = threading.Event()  # the inference thread's loop runs while set
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()  # guards what the callbacks and the worker both touch
        self._wakeup = threading.Condition(self._lock)
        self._active = False
        self._generation = 0  # a chunk started in an older generation is dropped
        self._chunk_generation = 0
        self._entities: list[tuple[Any, Any]] = []  # (destroy method, entity) of the topics and timer
        self._parameters_callback = None

    # -- start-up ---------------------------------------------------------------------------
    def _bring_up(self, values: dict[str, Any], policy=None) -> None:
        """Load (unless given) and check the policy, warm up, create the topics, start the worker."""
        self._prepare_policy(values, policy)
        self._init_state(values)
        # On CUDA the denoiser replays CUDA graphs, captured during the warm-up (eager elsewhere).
        self.policy.use_cuda_graphs()
        self._apply_sampler(self._settings)
        self._warm_up(values["warmup_runs"])
        self._create_interfaces(values)
        self._running.set()
        self._worker = threading.Thread(target=self._work, name=f"{self.get_name()}-inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"policy ready: {self._describe_policy()}; sampler {self._applied.describe()}, device "
            f"{self.policy.device}, {self.n_action_steps} actions per chunk at {values['control_rate']:g} Hz, "
            f"deadline {self._settings['deadline_ms']:g} ms; {self._describe_inputs()}, trajectories on "
            f"'{self._trajectory_pub.topic_name}'")

    def _prepare_policy(self, values: dict[str, Any], policy) -> None:
        """Load the policy (unless given), apply the scheduler override, check the parameters against it."""
        import torch

        # Leave a core to the executor and DDS: torch's spinning worker threads on every core
        # delayed callbacks and deliveries by hundreds of milliseconds on a 2-core machine.
        torch.set_num_threads(values["num_threads"] or max(1, (os.cpu_count() or 2) - 1))
        self.policy = policy if policy is not None else self._load_policy(values)
        changes = {"name": values["scheduler"], "num_inference_steps": values["num_inference_steps"]}
        changes = {key: value for key, value in changes.items() if value}  # "" and 0: the checkpoint's
        if changes:
            try:
                self.policy.set_scheduler(**changes)
            except Exception as err:  # ConfigError, diffusers errors
                raise StartupError(f"invalid scheduler override {changes}: {err}") from None
        config = self.policy.config
        problems = validate_against_policy(values, config.action_dim, config.horizon, config.n_obs_steps,
                                           config.n_action_steps) + validate_cameras(values, config)
        self.n_action_steps = values["n_action_steps"] or config.n_action_steps
        if self.n_action_steps < 2:
            problems.append("n_action_steps must be at least 2: action 0 is due at the observation's own stamp "
                            "and is always outdated by the time the chunk is ready")
        if problems:
            raise StartupError("invalid parameters for this checkpoint: " + "; ".join(problems))

    def _load_policy(self, values):
        from ..checkpoint import CheckpointError, load_policy
        from ..resources import shipped_checkpoint

        path = values["checkpoint"] or str(shipped_checkpoint())
        hint = "" if values["checkpoint"] else " (the 'checkpoint' parameter is empty, so the shipped Push-T " \
                                              "checkpoint was used; set 'checkpoint' to a policy checkpoint)"
        self.get_logger().info(f"loading the policy from {path}")
        try:
            return load_policy(path, device=values["device"])
        except CheckpointError as err:
            raise StartupError(f"cannot load the policy checkpoint: {err}{hint}") from None
        except (ValueError, RuntimeError, OSError) as err:
            raise StartupError(f"cannot load the policy checkpoint {path}: {err}") from None

    def _init_state(self, values: dict[str, Any]) -> None:
        config = self.policy.config
        self._values = values
        self._settings = {name: values[name] for name in RUNTIME_PARAMETERS}
        self._applied: SamplerChoice | None = None
        self.period_ns = period_ns(values["control_rate"])
        self.joint_names = list(values["joint_names"])
        self.action_low = np.asarray(values["action_min"], dtype=np.float64)
        self.action_high = np.asarray(values["action_max"], dtype=np.float64)
        self.stamped = values["observation_type"] == "joint_state"
        self._generator = None
        if values["seed"] >= 0:
            import torch

            self._generator = torch.Generator(device=self.policy.device).manual_seed(values["seed"])
        self._gate = ObservationGate(config.obs_dim, int(values["max_observation_age_ms"] * NS_PER_MS), self.stamped)
        self._window = ObservationWindow(config.n_obs_steps, config.obs_dim, step_layout(config))
        self._max_gap_ns = int(1.5 * self.period_ns)
        self._init_cameras(values)
        self.ledger = ChunkLedger(frames=bool(config.image_keys))
        self._recent_ready_age: deque[int] = deque(maxlen=10)
        self._round_time = RoundTimeEstimator(10)
        self._last_round_cap: int | None = None
        self._chunk_end_ns: int | None = None
        self._running_chunk = None  # the last published TimedChunk, for real-time chunking
        self._running_prediction = None  # its whole predicted horizon from its observation's step, timed alike
        self._throttle = Throttle(1.0)
        self._reporter = DiagnosticsReporter()

    def _create_interfaces(self, values: dict[str, Any]) -> None:
        try:
            self._trajectory_pub = self.create_publisher(JointTrajectory, values["trajectory_topic"], RELIABLE_COMMANDS)
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
            message, callback = (JointState, self._on_joint_state) if self.stamped else \
                (Float32MultiArray, self._on_array)
            self._subscription = self.create_subscription(message, values["observation_topic"], callback, SENSOR_QOS,
                                                          callback_group=MutuallyExclusiveCallbackGroup())
            frame_subscriptions = self._create_camera_subscriptions()
        except Exception as err:  # invalid topic names
            raise StartupError(f"cannot create the node's topics: {err}") from None
        if not self.stamped:
            self.get_logger().warning(
                "observation_type float32_multi_array is unstamped: the arrival time stands in for the "
                "observation's stamp, so its age and order cannot be checked", once=True)
        self._diagnostics_timer = self.create_timer(1.0 / values["diagnostics_rate"], self._publish_diagnostics,
                                                    callback_group=MutuallyExclusiveCallbackGroup())
        self._entities = [(self.destroy_publisher, self._trajectory_pub), (self.destroy_publisher, self._diagnostics_pub),
                          (self.destroy_subscription, self._subscription), (self.destroy_timer, self._diagnostics_timer),
                          *frame_subscriptions]
        self._parameters_callback = self.add_on_set_parameters_callback(self._on_set_parameters)

    def _describe_policy(self) -> str:
        c = self.policy.config
        return (f"obs_dim {c.obs_dim}, action_dim {c.action_dim}, horizon {c.horizon}, n_obs_steps {c.n_obs_steps}, "
                f"{c.scheduler.name} x {c.scheduler.num_inference_steps}")

    def _apply_sampler(self, settings: dict[str, Any]) -> SamplerChoice:
        choice = resolve_sampler(settings["sampler"], settings["window"], settings["tolerance"],
                                 fixed_shape=self.policy.device.type == "cuda")
        if choice != self._applied:
            self.policy.set_sampler(choice.name, **choice.options())
            self.policy.sampler = abandonable(self.policy.sampler, self._chunk_abandoned)
            if self._applied is None or (choice.name, choice.window) != (self._applied.name, self._applied.window):
                with self._lock:  # rounds of another sampler or window differ in cost
                    self._round_time = RoundTimeEstimator(10)
            self._applied = choice
        return choice

    def _chunk_abandoned(self) -> bool:
        return self._stopping.is_set() or self._chunk_generation != self._generation

    def _warm_up(self, runs: int) -> None:
        import torch

        config = self.policy.config
        # The middle of the observation normaliser's range (and mid-grey frames), repeated over the window.
        window = neutral_window(config, self.policy.obs_normalizer.unnormalize(torch.zeros(config.obs_dim)).numpy())
        options = {"max_rounds": None} if self._applied.parallel else {}
        self._chunk_generation = self._generation
        if runs:
            self.get_logger().info(f"warming up: {runs} inference(s)")
        for _ in range(runs):
            try:
                output = self.policy.predict(window, **options)
            except ChunkAbandoned:
                raise
            except TypeError as err:
                raise StartupError(f"sampler '{self._applied.name}' does not accept its options: {err}") from None
            except Exception as err:
                raise StartupError(f"the policy fails on a warm-up observation: {type(err).__name__}: {err}") from None
            self._round_time = RoundTimeEstimator(10)
            self._round_time.add(output.latency_s, output.stats.rounds)

    # -- activation and shutdown -----------------------------------------------------------------
    def _set_active(self, active: bool) -> None:
        """Accept observations and publish, or stop both at once: the running chunk is dropped and the
        window emptied, so that the next chunk is planned from observations that arrive afterwards."""
        with self._wakeup:
            self._active = active
            self._generation += 1
            self._clear_observations()
            self._chunk_end_ns = None
            self._running_chunk = self._running_prediction = None
            self._wakeup.notify_all()

    def request_stop(self) -> None:
        """The process is ending: drop the running chunk (or warm-up) and stop the inference thread."""
        self._stopping.set()
        self._stop_worker()

    def _stop_worker(self) -> None:
        self._running.clear()
        with self._wakeup:
            self._generation += 1
            self._wakeup.notify_all()
        if self._worker is not None:
            self._worker.join(JOIN_TIMEOUT_S)
            if self._worker.is_alive():
                self.get_logger().error(f"the inference thread did not stop within {JOIN_TIMEOUT_S:g} s")
            self._worker = None

    def _release(self) -> None:
        """Stop the inference thread, destroy the topics and timer, drop the model."""
        self._stop_worker()
        with self._wakeup:
            self._active = False
        if self._parameters_callback is not None:
            self.remove_on_set_parameters_callback(self._parameters_callback)
            self._parameters_callback = None
        for destroy, entity in self._entities:
            destroy(entity)
        self._entities = []
        self.policy = None

    def destroy_node(self) -> None:
        """Stop the worker (dropping a chunk in flight), destroy the topics, release the model, destroy the node."""
        self._release()
        super().destroy_node()

    # -- what the node does --------------------------------------------------------------------
    @property
    def sampler_choice(self) -> SamplerChoice:
        """The sampler and the options the last chunk (or the warm-up) ran with."""
        return self._applied

    def statistics(self) -> dict[str, Any]:
        """The ledger's counters and latencies (ms), the sampler in use and its options, the settings
        in effect, the matched peers (observation publishers, trajectory subscribers) and, for an image
        policy, its cameras (`_camera_statistics`)."""
        stats = self.ledger.statistics()
        with self._lock:
            estimate = self._round_time.estimate()
            deadline_ms = self._settings["deadline_ms"]
            active = self._active
        choice = self._applied
        stats.update(round_cap_last=self._last_round_cap, round_time_ms=None if estimate is None else estimate * 1000.0,
                     sampler=choice.name, window=choice.window_text(), tolerance=choice.tolerance,
                     deadline_ms=deadline_ms, device=str(self.policy.device), active=active,
                     observation_publishers=self._subscription.get_publisher_count(),
                     trajectory_subscribers=self._trajectory_pub.get_subscription_count(), **self._camera_statistics())
        return stats

    # -- parameters at run time ----------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        changed = {p.name: p.value for p in parameters if p.name in RUNTIME_PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        merged = dict(self._values, **changed)
        c = self.policy.config
        problems = validate_policy_parameters(merged) or validate_against_policy(
            merged, c.action_dim, c.horizon, c.n_obs_steps, c.n_action_steps)
        if problems:
            return SetParametersResult(successful=False, reason="; ".join(problems))
        with self._lock:
            self._values = merged
            self._settings = {name: merged[name] for name in RUNTIME_PARAMETERS}
            self._gate.max_age_ns = int(merged["max_observation_age_ms"] * NS_PER_MS)
            if self._cameras is not None:
                self._cameras.max_age_ns = self._gate.max_age_ns
        return SetParametersResult(successful=True)

    # -- inference (worker thread) -----------------------------------------------------------------
    def _work(self) -> None:
        seen = 0
        while self._running.is_set():
            with self._wakeup:
                self._wakeup.wait_for(lambda: not self._running.is_set() or self._window.sequence != seen, timeout=0.5)
                if not self._running.is_set():
                    return
                if self._window.sequence == seen:
                    continue
                seen = self._window.sequence
                snapshot = self._window.snapshot(self._max_gap_ns)
                settings = dict(self._settings)
                self._chunk_generation = self._generation
                if snapshot is None and len(self._window) == self._window.n_obs_steps:
                    self.ledger.count("windows_not_contiguous")
            if snapshot is not None:
                self._plan(*snapshot, settings)

    def _plan(self, observations: np.ndarray | dict[str, np.ndarray], stamp: int, settings: dict[str, Any]) -> None:
        """Infer for the window stamped `stamp` if waiting for the next observation would be too late."""
        deadline_ns = int(settings["deadline_ms"] * NS_PER_MS)
        lead = min(deadline_ns, max(self._recent_ready_age)) if self._recent_ready_age else deadline_ns
        if not should_start_inference(stamp, self._chunk_end_ns, self.period_ns, lead, settings["plan_ahead_periods"]):
            return
        try:
            self._infer(observations, stamp, settings, deadline_ns)
        except ChunkAbandoned:
            self.ledger.count("chunks_abandoned")
        except Exception as err:  # an inference failure must not stop the node
            self.ledger.count("inference_errors")
            if self._throttle.allow("inference_error", self._now_ns()):
                self.get_logger().error(f"inference failed: {type(err).__name__}: {err}")

    def _infer(self, observations, stamp: int, settings: dict[str, Any], deadline_ns: int) -> None:
        choice = self._apply_sampler(settings)
        plan = plan_rounds(choice.parallel, settings["round_cap"], settings["auto_round_cap"],
                           stamp + deadline_ns - self._now_ns(), self._round_time.estimate(), deadline_ns)
        if plan.skip:
            if choice.parallel:
                self._round_time.forget_slowest()
            self._miss("no_time", stamp, None, plan.skip)
            return
        self._last_round_cap = plan.cap
        options = {"max_rounds": plan.cap} if choice.parallel else {}
        delay = None
        if settings["real_time_chunking"]:
            delay, commitment = self._commitment(stamp, deadline_ns, settings["real_time_chunking_overlap"])
            options.update(commitment)
        output = self.policy.predict(observations, generator=self._generator, **options)
        ready = self._now_ns()
        if delay is not None and ready > stamp + delay * self.period_ns:
            self.ledger.count("rtc_overruns")  # more of the chunk is already due than was committed
        self._recent_ready_age.append(ready - stamp)
        with self._lock:
            self._round_time.add(output.latency_s, output.stats.rounds)
        record = self.ledger.inference(stamp, ready, output.latency_s, output.stats, plan.cap)
        if not deadline_met(stamp, ready, deadline_ns):
            self._miss("late", stamp, record, f"chunk ready {(ready - stamp) / NS_PER_MS:.1f} ms after its "
                                              f"observation, deadline {deadline_ns / NS_PER_MS:g} ms")
            return
        actions = self.policy.executed_actions(output.action_horizon, self.n_action_steps)
        chunk = plan_chunk(actions, stamp, ready, self.period_ns, self.action_low, self.action_high)
        if chunk is None:
            self._miss("outdated", stamp, record, "every action of the chunk was already due")
        else:
            predicted = self.policy.executed_actions(output.action_horizon, self.policy.config.max_executed_actions)
            self._publish(chunk, record, plan_chunk(predicted, stamp, stamp, self.period_ns, self.action_low,
                                                    self.action_high))

    def _commitment(self, stamp: int, deadline_ns: int, overlap_mode: str) -> tuple[int, dict[str, Any]]:
        """(planned delay in periods, sampler options inpainting what runs until then, and by `overlap_mode` the
        running prediction after it; none without a trajectory)."""
        expected = max(self._recent_ready_age) if self._recent_ready_age else deadline_ns
        delay = planned_delay_steps(expected, self.period_ns, most=self.n_action_steps - 1)
        with self._lock:
            actions = committed_actions(self._running_chunk, stamp, self.period_ns, delay)
            overlap = overlap_actions(self._running_prediction, stamp, self.period_ns, delay)
        if actions is None:
            return delay, {}
        first = self.policy.config.n_obs_steps - 2  # horizon position of the step before the observation's
        if first < 0:
            actions, first = actions[1:], 0
        overlap = overlap[: self.policy.config.horizon - first - len(actions)]
        return delay, self.policy.commitment(actions, first, overlap if len(overlap) else None, overlap_mode)

    def _publish(self, chunk, record: dict, prediction) -> None:
        """Publish the chunk unless it was dropped meanwhile (deactivated, stopping)."""
        with self._lock:
            if self._chunk_abandoned() or not self._active:
                self.ledger.count("chunks_abandoned")
                return
            self._trajectory_pub.publish(trajectory_message(chunk, self.joint_names))
            self._chunk_end_ns = chunk.end_ns
            self._running_chunk, self._running_prediction = chunk, prediction
        self.ledger.published(record, chunk)

    def _miss(self, kind: str, stamp: int, record: dict | None, message: str) -> None:
        self.ledger.missed(kind, stamp, record)
        if self._throttle.allow(f"miss:{kind}", self._now_ns()):
            self.get_logger().warning(f"deadline miss ({kind}): {message}; nothing published, the previous "
                                      "trajectory keeps running out")

    # -- diagnostics -----------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        try:
            report = self._reporter.report(self.statistics())
            self._diagnostics_pub.publish(diagnostic_array(report, f"{self.get_name()}: policy inference",
                                                           str(self.policy.device), self.get_clock().now().to_msg()))
        except Exception as err:
            if self._throttle.allow("diagnostics", self._now_ns()):
                self.get_logger().error(f"diagnostics failed: {type(err).__name__}: {err}")
