"""The nodes' parameters: names, defaults, descriptions, ranges, and their validation."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..policy import OVERLAP_MODES
from ..samplers import PARALLEL_SAMPLERS, SAMPLERS, paradigms, parataa

OBSERVATION_TYPES = ("joint_state", "float32_multi_array")
SIM_OBSERVATIONS = ("keypoints", "image")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
SCHEDULER_CHOICES = ("", "ddpm", "ddim", "dpmsolver")


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
    ParamSpec("sampler", "parataa", f"Denoising sampler: {', '.join(SAMPLERS)} (the registered samplers); "
              f"parallel: {', '.join(PARALLEL_SAMPLERS)}.", read_only=False),
    ParamSpec("window", 0, "Parallel samplers: denoising steps evaluated per round (batched); 0 = the sampler's "
              f"own default (paradigms: {paradigms.DEFAULT_WINDOW}, parataa: the whole chain).", read_only=False,
              minimum=0, maximum=1000),
    ParamSpec("tolerance", -1.0, "Parallel samplers: convergence tolerance, in the running sampler's unit: paradigms, "
              "a fraction of each step's noise std; parataa, the RMS first-order residual in normalised action units. "
              f"-1 = the sampler's own default (paradigms: {paradigms.DEFAULT_TOLERANCE:g}, parataa: "
              f"{parataa.DEFAULT_TOLERANCE:g}); 0 = solve to the sequential answer.", read_only=False,
              minimum=-1.0, maximum=100.0, constraints="-1 (the sampler's default) or >= 0"),
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
    ParamSpec("real_time_chunking", True, "Inpaint each new chunk with what the running trajectory commands until "
              "the chunk is expected (the measured observation-to-ready time in control periods, rounded up, plus "
              "one) and the command due just before its observation, so the new trajectory continues the old one; "
              "a chunk later than planned counts as rtc_overruns.", read_only=False),
    ParamSpec("real_time_chunking_overlap", "guided", "Real-time chunking: what of the running chunk's prediction "
              "after the held commands is used: hard = nothing, soft = pulled with RTC's decaying weights, guided = "
              "the chunk guided towards it and the held commands (RTC's guidance: a backward pass per network call, "
              "through the eager model, so on a GPU CUDA graphs serve only chunks planned with nothing running).",
              read_only=False, constraints="hard, soft or guided"),
    ParamSpec("deadline_ms", 500.0, "A chunk must be ready this long after its observation's stamp; a later one "
              "is a deadline miss and is not published.", read_only=False, minimum=1.0, maximum=60000.0),
    ParamSpec("max_observation_age_ms", 200.0, "Observations older than this on arrival are rejected; 0 = no age "
              "check. Not applicable to unstamped observations.", read_only=False, minimum=0.0, maximum=60000.0),
    ParamSpec("observation_type", "joint_state", "Observation message: joint_state (sensor_msgs/JointState, "
              "position = observation vector, stamped) or float32_multi_array (std_msgs/Float32MultiArray, "
              "unstamped: the arrival time is used and age/order cannot be judged).",
              constraints="joint_state or float32_multi_array"),
    ParamSpec("observation_topic", "observation", "Observation input topic (relative, remappable)."),
    ParamSpec("image_topics", [], "Image policies: the sensor_msgs/Image topic (rgb8 or bgr8) of each camera, in "
              "the order of the policy's image keys (relative, remappable); empty = each key's name, characters a "
              "topic cannot hold as '_' (Push-T: 'image'). The joint state's position holds the low-dim keys."),
    ParamSpec("image_stamp_tolerance_ms", 20.0, "Image policies: a frame belongs to the joint state whose "
              "header.stamp is at most this far from its own; the newest joint state with a frame of every camera "
              "within it becomes a window step, stamped as the joint state.", minimum=0.0, maximum=1000.0),
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
    ParamSpec("observation", "keypoints", "What the policy observes: keypoints (the 20-value keypoint layout on "
              "observation_topic) or image (the camera frame as sensor_msgs/Image rgb8 on image_topic, and the "
              "agent position, 2 values, on observation_topic, both with the same header.stamp; needs "
              "observation_type joint_state).", constraints="keypoints or image"),
    ParamSpec("image_topic", "image", "observation image: the camera frame's topic (relative, remappable)."),
    ParamSpec("image_size", 96, "observation image: the frame's height and width in pixels (the image policy's; "
              "Push-T's demonstrations: 96).", minimum=8, maximum=1024),
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


def validate_policy_parameters(values: dict[str, Any]) -> list[str]:
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
    if "sampler" in v and v["sampler"] not in SAMPLERS:
        problems.append(f"sampler must be one of {', '.join(SAMPLERS)} (got {v['sampler']!r})")
    if "tolerance" in v and v["tolerance"] < 0 and v["tolerance"] != -1.0:
        problems.append(f"tolerance must be -1 (the sampler's default) or >= 0 (got {v['tolerance']!r})")
    if "scheduler" in v and v["scheduler"] not in SCHEDULER_CHOICES:
        problems.append("scheduler must be empty (the checkpoint's) or one of ddpm, ddim, dpmsolver "
                        f"(got {v['scheduler']!r})")
    if "observation_type" in v and v["observation_type"] not in OBSERVATION_TYPES:
        problems.append(f"observation_type must be one of {', '.join(OBSERVATION_TYPES)} "
                        f"(got {v['observation_type']!r})")
    if "real_time_chunking_overlap" in v and v["real_time_chunking_overlap"] not in OVERLAP_MODES:
        problems.append(f"real_time_chunking_overlap must be one of {', '.join(OVERLAP_MODES)} "
                        f"(got {v['real_time_chunking_overlap']!r})")
    for name in ("observation_topic", "trajectory_topic"):
        if name in v and not v[name].strip():
            problems.append(f"{name} must not be empty")
    if "image_topics" in v:
        topics = list(v["image_topics"])
        if any(not isinstance(t, str) or not t.strip() for t in topics) or len(set(topics)) != len(topics):
            problems.append(f"image_topics must be distinct non-empty topic names (got {topics!r})")
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


def validate_cameras(values: dict[str, Any], config) -> list[str]:
    """Problems of the camera parameters for this policy (`config`: its image keys and their shapes)."""
    keys = list(config.image_keys)
    topics = list(values.get("image_topics", []))
    if not keys:
        return [f"image_topics is set ({topics!r}) but the policy takes no images"] if topics else []
    problems = []
    if values.get("observation_type") != "joint_state":
        problems.append("an image policy needs observation_type joint_state: each frame is matched to a joint state "
                        "by header stamps, and its position holds the low-dim keys "
                        f"(got {values.get('observation_type')!r})")
    if topics and len(topics) != len(keys):
        problems.append(f"image_topics has {len(topics)} entries but the policy has the image keys {keys}")
    channels = {spec.key: spec.shape[0] for spec in config.observations if spec.kind == "image"}
    if any(count != 3 for count in channels.values()):
        problems.append(f"the node takes rgb8 or bgr8 frames (3 channels), the image keys have {channels}")
    return problems


def validate_sim_parameters(values: dict[str, Any]) -> list[str]:
    problems = check_ranges(values, SIM_NODE_PARAMETERS)
    if problems:
        return problems
    if "observation_type" in values and values["observation_type"] not in OBSERVATION_TYPES:
        problems.append(f"observation_type must be one of {', '.join(OBSERVATION_TYPES)} "
                        f"(got {values['observation_type']!r})")
    if "observation" in values and values["observation"] not in SIM_OBSERVATIONS:
        problems.append(f"observation must be one of {', '.join(SIM_OBSERVATIONS)} (got {values['observation']!r})")
    elif values.get("observation") == "image" and values.get("observation_type") != "joint_state":
        problems.append("observation image needs observation_type joint_state: the frame and the agent position "
                        "share a header.stamp")
    for name in ("observation_topic", "trajectory_topic", "score_topic", "image_topic"):
        if name in values and not values[name].strip():
            problems.append(f"{name} must not be empty")
    names = list(values.get("joint_names", ["x", "y"]))
    if len(names) != 2 or len(set(names)) != 2 or any(not n.strip() for n in names):
        problems.append(f"joint_names must be two distinct names, the agent's x and y target (got {names!r})")
    return problems


