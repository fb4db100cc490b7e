"""ROS-free logic of the ROS 2 nodes: timing of action chunks, observation checks, statistics, parameters.

Everything here is plain Python and numpy so that it can be unit-tested without rclpy; the node
modules (`policy_node`, `pusht_sim_node`, `demo`) only wire it to topics, timers and parameters.

Timing conventions (all times are integer nanoseconds on the node's clock):

- An observation stamped `s` is the state at time `s`. The policy's chunk starts at the newest
  observation's step, as in Diffusion Policy: action k (k = 0 .. n_action_steps - 1) is the
  command due at `s + k * period`, with `period = 1 / control_rate`.
- A chunk whose inference finished at time `r` keeps only the actions due at or after `r`; the
  earlier ones are outdated and dropped (action 0 always is, since `r > s`).
- The published trajectory's `header.stamp` is the due time of the first kept action; point j has
  `time_from_start = j * period` (strictly increasing by one period).
- Deadline: the chunk for an observation stamped `s` must be ready by `s + deadline`; a chunk that
  is ready later is a deadline miss and is not published at all.
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000

OBSERVATION_TYPES = ("joint_state", "float32_multi_array")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
SCHEDULER_CHOICES = ("", "ddpm", "ddim", "dpmsolver")


def seconds_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


def period_ns(control_rate_hz: float) -> int:
    """The control period in nanoseconds (rounded to the nanosecond)."""
    if not control_rate_hz > 0 or not math.isfinite(control_rate_hz):
        raise ValueError(f"control rate must be a positive number of Hz (got {control_rate_hz!r})")
    return int(round(NS_PER_S / control_rate_hz))


# ----------------------------------------------------------------------------------------------
# Chunk -> timed trajectory


@dataclass(frozen=True)
class TimedChunk:
    """The part of a chunk that is still to come, with its timing.

    start_ns: due time of the first kept action (the trajectory's header.stamp).
    period_ns: spacing of the points (time_from_start of point j = j * period_ns).
    positions: (n_kept, action_dim) float64, clipped to the bounds.
    first_index: index, in the chunk, of the first kept action.
    dropped: actions dropped because they were already due when the chunk was ready.
    clipped: number of action values that were outside the bounds.
    """

    start_ns: int
    period_ns: int
    positions: np.ndarray
    first_index: int
    dropped: int
    clipped: int = 0

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def end_ns(self) -> int:
        """Due time of the last kept action."""
        return self.start_ns + (len(self.positions) - 1) * self.period_ns

    def times_from_start_ns(self) -> list[int]:
        return [j * self.period_ns for j in range(len(self.positions))]

    def due_times_ns(self) -> list[int]:
        return [self.start_ns + t for t in self.times_from_start_ns()]


def first_due_index(obs_stamp_ns: int, ready_ns: int, period: int) -> int:
    """Index of the first action due at or after `ready_ns` (action k is due at stamp + k * period)."""
    if period <= 0:
        raise ValueError("period must be positive")
    late = ready_ns - obs_stamp_ns
    return 0 if late <= 0 else -(-late // period)


def plan_chunk(actions, obs_stamp_ns: int, ready_ns: int, period: int,
               low: Sequence[float] | None = None, high: Sequence[float] | None = None) -> TimedChunk | None:
    """Drop the outdated actions of a chunk, clip the rest to [low, high] and time them.

    Returns None when every action is outdated (nothing may be published).
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"actions must be a non-empty (n, action_dim) array, got shape {actions.shape}")
    first = first_due_index(obs_stamp_ns, ready_ns, period)
    if first >= len(actions):
        return None
    kept = actions[first:]
    clipped = 0
    if low is not None or high is not None:
        lo = np.full(kept.shape[1], -np.inf) if low is None else np.asarray(low, dtype=np.float64)
        hi = np.full(kept.shape[1], np.inf) if high is None else np.asarray(high, dtype=np.float64)
        clipped = int(np.count_nonzero((kept < lo) | (kept > hi)))
        kept = np.clip(kept, lo, hi)
    return TimedChunk(obs_stamp_ns + first * period, period, kept, first, first, clipped)


def deadline_met(obs_stamp_ns: int, ready_ns: int, deadline_ns: int) -> bool:
    """True when a chunk ready at `ready_ns` meets the deadline of the observation stamped `obs_stamp_ns`."""
    return ready_ns <= obs_stamp_ns + deadline_ns


def should_start_inference(newest_stamp_ns: int, chunk_end_ns: int | None, period: int, lead_ns: int,
                           plan_ahead_periods: int = 1) -> bool:
    """Whether to plan now for the newest observation or wait for the next one.

    A chunk planned now arrives about `lead_ns` after the observation; one planned from the next
    observation arrives a period later. The running chunk's last action (due at `chunk_end_ns`)
    holds until `chunk_end_ns + period`. Waiting is fine while the later chunk would still arrive
    `plan_ahead_periods` periods before that: start now when
    `newest + period + lead + plan_ahead_periods * period > chunk_end + period`.
    `plan_ahead_periods` = 1 keeps one period of margin for timing jitter; 0 plans as late as
    possible, which reproduces Diffusion Policy's execution (every action of a chunk, then a new
    one) when inference costs no time on the node's clock (a lockstep simulation).
    With no chunk running, start now.
    """
    if chunk_end_ns is None:
        return True
    return newest_stamp_ns + max(0, lead_ns) + plan_ahead_periods * period > chunk_end_ns


def deadline_margin_ns(deadline_ns: int) -> int:
    """Safety margin kept free when capping rounds: 10% of the deadline, at least 2 ms."""
    return max(2 * NS_PER_MS, deadline_ns // 10)


def auto_round_cap(budget_ns: int, seconds_per_round: float | None, deadline_ns: int) -> int | None:
    """Most rounds that fit in the remaining budget, minus the safety margin.

    None when there is no per-round estimate yet (no cap); 0 when not even one round fits.
    """
    if seconds_per_round is None or seconds_per_round <= 0:
        return None
    per_round = max(1, seconds_to_ns(seconds_per_round))
    usable = budget_ns - deadline_margin_ns(deadline_ns)
    return max(0, usable // per_round)


def combine_caps(*caps: int | None) -> int | None:
    """The smallest of the given caps; None entries mean "no cap"."""
    values = [c for c in caps if c is not None]
    return min(values) if values else None


# ----------------------------------------------------------------------------------------------
# Statistics


class RollingStats:
    """The last `size` samples of a quantity, with percentiles."""

    def __init__(self, size: int = 1000):
        self._samples: deque[float] = deque(maxlen=size)
        self.count = 0

    def add(self, value: float) -> None:
        self._samples.append(float(value))
        self.count += 1

    def __len__(self) -> int:
        return len(self._samples)

    def values(self) -> list[float]:
        return list(self._samples)

    def percentile(self, q: float) -> float | None:
        if not self._samples:
            return None
        return float(np.percentile(np.fromiter(self._samples, dtype=np.float64), q))

    def p50(self) -> float | None:
        return self.percentile(50.0)

    def p99(self) -> float | None:
        return self.percentile(99.0)

    def max(self) -> float | None:
        return max(self._samples) if self._samples else None

    def mean(self) -> float | None:
        return float(np.mean(self._samples)) if self._samples else None


def percentiles(values: Iterable[float], qs: Sequence[float] = (50.0, 99.0)) -> list[float | None]:
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        return [None for _ in qs]
    return [float(np.percentile(values, q)) for q in qs]


class RoundTimeEstimator:
    """Seconds per sampler round, from recent chunks: the 90th percentile of the last `size` chunks."""

    def __init__(self, size: int = 10):
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, latency_s: float, rounds: int) -> None:
        if rounds > 0 and latency_s > 0:
            self._samples.append(latency_s / rounds)

    def estimate(self) -> float | None:
        if not self._samples:
            return None
        return float(np.percentile(np.fromiter(self._samples, dtype=np.float64), 90.0))

    def forget_slowest(self) -> None:
        """Drop the slowest sample. Called when a chunk is skipped for lack of time: a skipped chunk
        measures nothing, so without this one slow outlier could block every later chunk."""
        if self._samples:
            self._samples.remove(max(self._samples))


class Throttle:
    """Allows one event per key every `period_s` seconds (for throttled warnings)."""

    def __init__(self, period_s: float = 1.0):
        self.period_ns = seconds_to_ns(period_s)
        self._last: dict[str, int] = {}

    def allow(self, key: str, now_ns: int) -> bool:
        last = self._last.get(key)
        if last is not None and now_ns - last < self.period_ns:
            return False
        self._last[key] = now_ns
        return True


# ----------------------------------------------------------------------------------------------
# Observations


REJECT_REASONS = ("wrong_length", "non_finite", "no_stamp", "stale", "future", "out_of_order")


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # one of REJECT_REASONS when rejected
    message: str = ""


class ObservationGate:
    """Checks each incoming observation before it may enter the window.

    Rejected: a vector of the wrong length; NaN or Inf; (stamped mode) a zero stamp, a stamp older
    than `max_age_ns` (0 disables the age check) or further than that in the future, and a stamp
    not newer than the last accepted one (out of order or duplicate).
    """

    def __init__(self, obs_dim: int, max_age_ns: int, stamped: bool = True):
        self.obs_dim = obs_dim
        self.max_age_ns = max_age_ns
        self.stamped = stamped
        self.last_stamp_ns: int | None = None

    def check(self, values, stamp_ns: int, now_ns: int) -> Verdict:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != self.obs_dim:
            return Verdict(False, "wrong_length",
                           f"observation has {values.size} values, the policy expects {self.obs_dim}")
        if not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            return Verdict(False, "non_finite", f"observation contains {bad} NaN/Inf value(s)")
        if self.stamped:
            if stamp_ns == 0:
                return Verdict(False, "no_stamp", "observation has a zero header.stamp")
            age = now_ns - stamp_ns
            if self.max_age_ns > 0 and age > self.max_age_ns:
                return Verdict(False, "stale", f"observation is {age / NS_PER_MS:.1f} ms old "
                                               f"(max_observation_age_ms = {self.max_age_ns / NS_PER_MS:g})")
            if self.max_age_ns > 0 and -age > self.max_age_ns:
                return Verdict(False, "future", f"observation is stamped {-age / NS_PER_MS:.1f} ms in the future")
            if self.last_stamp_ns is not None and stamp_ns <= self.last_stamp_ns:
                return Verdict(False, "out_of_order",
                               f"observation stamp is {(self.last_stamp_ns - stamp_ns) / NS_PER_MS:.1f} ms "
                               "older than (or equal to) the last accepted one")
        self.last_stamp_ns = stamp_ns
        return Verdict(True)


class ObservationWindow:
    """The last n observations with their stamps; a window is usable when its stamps are contiguous."""

    def __init__(self, n_obs_steps: int, obs_dim: int):
        self.n_obs_steps = n_obs_steps
        self.obs_dim = obs_dim
        self._items: deque[tuple[int, np.ndarray]] = deque(maxlen=n_obs_steps)
        self.sequence = 0  # number of observations ever pushed

    def push(self, values, stamp_ns: int) -> None:
        self._items.append((stamp_ns, np.asarray(values, dtype=np.float32).reshape(self.obs_dim).copy()))
        self.sequence += 1

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    def newest_stamp(self) -> int | None:
        return self._items[-1][0] if self._items else None

    def snapshot(self, max_gap_ns: int) -> tuple[np.ndarray, int] | None:
        """(window (n_obs_steps, obs_dim), newest stamp), or None if not full or a gap exceeds max_gap_ns."""
        if len(self._items) < self.n_obs_steps:
            return None
        stamps = [stamp for stamp, _ in self._items]
        if any(later - earlier > max_gap_ns for earlier, later in zip(stamps, stamps[1:])):
            return None
        return np.stack([values for _, values in self._items]), stamps[-1]


# ----------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class ParamSpec:
    """A node parameter: default (whose Python type is the parameter type), description, range."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    minimum: float | None = None
    maximum: float | None = None
    constraints: str = ""


POLICY_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("checkpoint", "", "Policy checkpoint: native directory, Diffusion Policy .ckpt or LeRobot directory; "
              "empty = the shipped Push-T checkpoint (package share directory or source tree)."),
    ParamSpec("device", "auto", "Torch device for inference.", constraints="auto, cpu, cuda or cuda:N"),
    ParamSpec("sampler", "paradigms", "Denoising sampler: sequential, paradigms (or any registered sampler).",
              read_only=False),
    ParamSpec("window", 16, "Parallel samplers: denoising steps evaluated per round (batched).", read_only=False,
              minimum=1, maximum=1000),
    ParamSpec("tolerance", 0.1, "Parallel samplers: convergence tolerance, in units of each step's noise std.",
              read_only=False, minimum=0.0, maximum=100.0),
    ParamSpec("round_cap", 0, "Parallel samplers: at most this many rounds per chunk; 0 = no fixed cap.",
              read_only=False, minimum=0, maximum=100000),
    ParamSpec("auto_round_cap", True, "Parallel samplers: cap the rounds so that the chunk is ready before the "
              "deadline, from the measured time per round.", read_only=False),
    ParamSpec("scheduler", "", "Sampling scheduler override; empty = the checkpoint's.",
              constraints="'', ddpm, ddim or dpmsolver"),
    ParamSpec("num_inference_steps", 0, "Denoising steps override; 0 = the checkpoint's.", minimum=0, maximum=10000),
    ParamSpec("control_rate", 10.0, "Rate (Hz) at which the actions of a chunk apply; also the expected "
              "observation rate.", minimum=0.1, maximum=1000.0),
    ParamSpec("n_action_steps", 0, "Actions per chunk (from the newest observation's step on); 0 = the "
              "checkpoint's.", minimum=0, maximum=10000),
    ParamSpec("plan_ahead_periods", 1, "Plan the next chunk so that it arrives this many control periods before "
              "the running chunk runs out (beyond the measured inference time); 1 leaves a period for jitter, 0 "
              "plans as late as possible (a lockstep simulation, where inference costs no simulated time).",
              read_only=False, minimum=0, maximum=1000),
    ParamSpec("deadline_ms", 500.0, "A chunk must be ready this long after its observation's stamp; a later one "
              "is a deadline miss and is not published.", read_only=False, minimum=1.0, maximum=60000.0),
    ParamSpec("max_observation_age_ms", 200.0, "Observations older than this on arrival are rejected; 0 = no age "
              "check. Not applicable to unstamped observations.", read_only=False, minimum=0.0, maximum=60000.0),
    ParamSpec("observation_type", "joint_state", "Observation message: joint_state (sensor_msgs/JointState, "
              "position = observation vector, stamped) or float32_multi_array (std_msgs/Float32MultiArray, "
              "unstamped: the arrival time is used and age/order cannot be judged).",
              constraints="joint_state or float32_multi_array"),
    ParamSpec("observation_topic", "observation", "Observation input topic (relative, remappable)."),
    ParamSpec("trajectory_topic", "joint_trajectory", "trajectory_msgs/JointTrajectory output topic (reliable)."),
    ParamSpec("joint_names", ["agent_x", "agent_y"], "Joint names of the trajectory, one per action dimension."),
    ParamSpec("action_min", [0.0, 0.0], "Lower bound of each action dimension; positions are clipped to it."),
    ParamSpec("action_max", [512.0, 512.0], "Upper bound of each action dimension; positions are clipped to it."),
    ParamSpec("seed", -1, "Seed of the sampling noise generator; -1 = not seeded.", minimum=-1, maximum=2**62),
    ParamSpec("num_threads", 0, "torch CPU threads; 0 = all cores but one (left to the executor).", minimum=0, maximum=1024),
    ParamSpec("warmup_runs", 2, "Inferences run at start-up (warm-up and the first time-per-round measurement).",
              minimum=0, maximum=100),
    ParamSpec("diagnostics_rate", 1.0, "Rate (Hz) of the /diagnostics status.", minimum=0.01, maximum=100.0),
)

SIM_NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("control_rate", 10.0, "Simulation steps per second (Push-T: 10).", minimum=0.1, maximum=1000.0),
    ParamSpec("seed", 100000, "Seed of the first episode; episode i uses seed + i.", minimum=0, maximum=2**62),
    ParamSpec("max_steps", 300, "Steps per episode before a reset (gym-pusht's limit is 300).", minimum=1,
              maximum=300),
    ParamSpec("episodes", 0, "Episodes to run before stopping; 0 = run until shut down.", minimum=0,
              maximum=1000000),
    ParamSpec("reset_pause_s", 1.0, "Pause without observations between episodes; keep it above the policy's "
              "deadline so that no chunk of the previous episode is executed.", minimum=0.0, maximum=60.0),
    ParamSpec("observation_type", "joint_state", "Observation message: joint_state or float32_multi_array.",
              constraints="joint_state or float32_multi_array"),
    ParamSpec("observation_topic", "observation", "Observation output topic (relative, remappable)."),
    ParamSpec("trajectory_topic", "joint_trajectory", "Trajectory input topic (relative, remappable)."),
    ParamSpec("score_topic", "episode_score", "std_msgs/Float32 episode score output topic (relative)."),
    ParamSpec("joint_names", ["agent_x", "agent_y"], "Trajectory joint names of the agent's x and y target."),
    ParamSpec("video_dir", "", "Write a video of each episode into this directory; empty = no video."),
    ParamSpec("lockstep", False, "Run on simulated time, published on /clock (set use_sim_time on the policy "
              "node): a step for which no trajectory point is due waits for one, so the policy's computing time "
              "costs no simulated time and chunks execute as in `paradigms-policy eval`."),
    ParamSpec("lockstep_warmup_steps", 1, "Lockstep: steps at the start of an episode taken without waiting, "
              "while the policy collects its first observations (its n_obs_steps - 1).", minimum=0, maximum=1000),
    ParamSpec("lockstep_timeout_s", 10.0, "Lockstep: wall-clock seconds to wait for a command before stepping "
              "without one (the agent holds its target).", minimum=0.01, maximum=3600.0),
    ParamSpec("max_real_time_factor", 10.0, "Lockstep: simulated seconds per wall-clock second while the policy "
              "keeps up (the waits for commands come on top).", minimum=0.01, maximum=1000.0),
)


def spec_defaults(specs: Iterable[ParamSpec]) -> dict[str, Any]:
    return {spec.name: spec.default for spec in specs}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_ranges(values: dict[str, Any], specs: Iterable[ParamSpec]) -> list[str]:
    """Type and range problems of the values against their specs (one message per problem)."""
    problems = []
    for spec in specs:
        if spec.name not in values:
            continue
        value = values[spec.name]
        expected = type(spec.default)
        if expected is float:
            ok = _is_number(value)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected is list:
            ok = isinstance(value, (list, tuple))
        else:
            ok = isinstance(value, expected)
        if not ok:
            problems.append(f"{spec.name} must be of type {expected.__name__} (got {value!r})")
            continue
        if spec.minimum is not None and value < spec.minimum:
            problems.append(f"{spec.name} must be >= {spec.minimum} (got {value!r})")
        if spec.maximum is not None and value > spec.maximum:
            problems.append(f"{spec.name} must be <= {spec.maximum} (got {value!r})")
    return problems


def validate_policy_parameters(values: dict[str, Any], known_samplers: Iterable[str] = ()) -> list[str]:
    """Problems of the policy node's parameters, each a clear sentence; [] when all are valid.

    Checks that need the policy (joint and bound counts against action_dim, n_action_steps against
    the horizon) are in `validate_against_policy`.
    """
    problems = check_ranges(values, POLICY_NODE_PARAMETERS)
    if problems:
        return problems
    v = values
    if "device" in v and not DEVICE_PATTERN.match(v["device"]):
        problems.append(f"device must be auto, cpu, cuda or cuda:N (got {v['device']!r})")
    known = list(known_samplers)
    if "sampler" in v and (not v["sampler"] or (known and v["sampler"] not in known)):
        choices = ", ".join(known) or "the registered samplers"
        problems.append(f"sampler must be one of {choices} (got {v['sampler']!r})")
    if "scheduler" in v and v["scheduler"] not in SCHEDULER_CHOICES:
        problems.append("scheduler must be empty (the checkpoint's) or one of ddpm, ddim, dpmsolver "
                        f"(got {v['scheduler']!r})")
    if "observation_type" in v and v["observation_type"] not in OBSERVATION_TYPES:
        problems.append(f"observation_type must be one of {', '.join(OBSERVATION_TYPES)} "
                        f"(got {v['observation_type']!r})")
    for name in ("observation_topic", "trajectory_topic"):
        if name in v and not v[name].strip():
            problems.append(f"{name} must not be empty")
    if "joint_names" in v:
        names = list(v["joint_names"])
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            problems.append(f"joint_names must be a non-empty list of non-empty names (got {names!r})")
        elif len(set(names)) != len(names):
            problems.append(f"joint_names must be unique (got {names!r})")
    if "action_min" in v and "action_max" in v:
        low, high = list(v["action_min"]), list(v["action_max"])
        if not all(_is_number(x) for x in low + high):
            problems.append("action_min and action_max must contain finite numbers")
        elif len(low) != len(high):
            problems.append(f"action_min has {len(low)} values but action_max has {len(high)}")
        elif any(lo >= hi for lo, hi in zip(low, high)):
            problems.append(f"action_min must be below action_max in every dimension (got {low} and {high})")
    return problems


def validate_against_policy(values: dict[str, Any], action_dim: int, horizon: int, n_obs_steps: int,
                            checkpoint_n_action_steps: int) -> list[str]:
    """Problems of the parameters that only show once the policy's shapes are known."""
    problems = []
    for name in ("joint_names", "action_min", "action_max"):
        if name in values and len(values[name]) != action_dim:
            problems.append(f"{name} has {len(values[name])} entries but the policy has action_dim {action_dim}")
    most = horizon - n_obs_steps + 1
    steps = values.get("n_action_steps", 0) or checkpoint_n_action_steps
    if steps > most:
        problems.append(f"n_action_steps {steps} exceeds horizon - n_obs_steps + 1 = {most} for this checkpoint")
    elif steps > 1 and "deadline_ms" in values and "control_rate" in values:
        span_ms = (steps - 1) * 1000.0 / values["control_rate"]
        if values["deadline_ms"] >= span_ms:
            problems.append(
                f"deadline_ms {values['deadline_ms']:g} must be below the chunk's span (n_action_steps - 1) / "
                f"control_rate = {span_ms:g} ms, otherwise a chunk that meets it may have no action left")
    return problems


def validate_sim_parameters(values: dict[str, Any]) -> list[str]:
    problems = check_ranges(values, SIM_NODE_PARAMETERS)
    if problems:
        return problems
    if "observation_type" in values and values["observation_type"] not in OBSERVATION_TYPES:
        problems.append(f"observation_type must be one of {', '.join(OBSERVATION_TYPES)} "
                        f"(got {values['observation_type']!r})")
    for name in ("observation_topic", "trajectory_topic", "score_topic"):
        if name in values and not values[name].strip():
            problems.append(f"{name} must not be empty")
    names = list(values.get("joint_names", ["x", "y"]))
    if len(names) != 2 or len(set(names)) != 2 or any(not n.strip() for n in names):
        problems.append(f"joint_names must be two distinct names, the agent's x and y target (got {names!r})")
    return problems


# ----------------------------------------------------------------------------------------------
# Trajectory playback (simulation side)


class TrajectorySchedule:
    """Timed commands from received trajectories, as a trajectory controller keeps them.

    A new trajectory replaces the scheduled points from its first point's time on; the command at
    time t is the latest point due at or before t (+ tolerance). Points are (due_ns, action).
    """

    def __init__(self):
        self._points: list[tuple[int, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._points)

    def clear(self) -> None:
        self._points.clear()

    def insert(self, due_ns: Sequence[int], actions) -> None:
        actions = np.asarray(actions, dtype=np.float64)
        if len(due_ns) != len(actions) or len(due_ns) == 0:
            raise ValueError("a trajectory needs as many due times as actions, at least one")
        if any(b <= a for a, b in zip(due_ns, due_ns[1:])):
            raise ValueError("trajectory point times must strictly increase")
        start = due_ns[0]
        self._points = [p for p in self._points if p[0] < start]
        self._points.extend((int(t), a.copy()) for t, a in zip(due_ns, actions))

    def command_at(self, now_ns: int, period: int) -> tuple[np.ndarray | None, bool]:
        """(action, fresh) for the control tick at `now_ns`.

        action: the latest point due by now (within half a period, for timer jitter); None if no
            point is due yet. Older points are discarded.
        fresh: the point's own slot [due, due + period) contains now; False when the trajectory has
            run out and its last point is only being held.
        """
        tolerance = period // 2
        last = None
        for index, (due, _) in enumerate(self._points):
            if due > now_ns + tolerance:
                break
            last = index
        if last is None:
            return None, False
        del self._points[:last]
        due, action = self._points[0]
        return action, now_ns + tolerance - due < period

    def last_due_ns(self) -> int | None:
        return self._points[-1][0] if self._points else None
