"""`pusht_sim_node`: the gym-pusht simulation at a fixed control rate, driven by JointTrajectory messages.

Every tick (10 Hz by default), at time t on the node's clock:
  1. publish the current observation stamped t (the 20-value keypoint layout of `pusht_env`,
     as sensor_msgs/JointState positions, or std_msgs/Float32MultiArray); with `observation: image`,
     for an image policy, the agent position (2 values, JointState) and the camera frame
     (`PushTKeypointsEnv.frame`, image_size square, sensor_msgs/Image rgb8 on `image`), both stamped t;
  2. pick the command due at t from the received trajectories: the latest point due at or before
     t (+ half a period for timer jitter); a newer trajectory replaces the older one from its first
     point's time on, as a trajectory controller does. With no point due yet, or after the last
     one, the agent holds its last target (at the start of an episode: where it stands);
  3. step the simulation with it (0.1 s of physics).
An episode ends on success (coverage >= 0.95), on gym-pusht's termination or after max_steps
steps; its score (max over the episode of clip(coverage / 0.95, 0, 1)) goes out on
`episode_score` (std_msgs/Float32, reliable, transient local). Between episodes the node pauses
for reset_pause_s without publishing observations or executing commands, then resets with the
next seed. Trajectories use the header.stamp convention of ros2_control: zero means "now".

With `lockstep: true` the node keeps its own simulated time and publishes it on /clock (the
policy node then runs with use_sim_time, config/lockstep.yaml). Before a step for which no
trajectory point is due, the simulation waits for one (up to lockstep_timeout_s of wall time), so
the policy's computing time costs no simulated time and each chunk runs from its observation's
step on, as in `paradigms-policy eval`; otherwise it runs up to max_real_time_factor times faster
than real time. The first episode starts once the policy node is seen on the topics.
"""
from __future__ import annotations

import array
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray
from trajectory_msgs.msg import JointTrajectory

from ..control.parameters import SIM_NODE_PARAMETERS, validate_sim_parameters
from ..control.playback import TrajectorySchedule
from ..control.statistics import Throttle
from ..control.timing import NS_PER_S, period_ns
from ..control.trajectory_rules import ControllerRules, trajectory_problems
from .common import RELIABLE_COMMANDS, SCORE_QOS, SENSOR_QOS, StartupError, declare_parameters, ns_to_time_msg, run_node
from .messages import trajectory_fields

CLOCK_TOPIC = "/clock"  # absolute: rclpy's use_sim_time listens there
CAMERA_FRAME = "pusht_camera"  # header.frame_id of the frames
SUMMARY = ("pusht_sim_node: the Push-T simulation at a fixed rate; observations on 'observation' (and, for an "
           "image policy, frames on 'image'), trajectories from 'joint_trajectory', episode scores on 'episode_score'.")


def observation_names() -> list[str]:
    """Names of the 20 observation values: the nine T keypoints (x, y), then the agent (x, y)."""
    names = [f"keypoint{i}_{axis}" for i in range(9) for axis in ("x", "y")]
    return names + ["agent_x", "agent_y"]


class PushTSimNode(Node):
    """The simulation node. `results` lists finished episodes; `finished` is set after `episodes` of them."""

    def __init__(self, node_name: str = "pusht_sim_node", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._lock = threading.Lock()
        self.results: list[dict[str, Any]] = []
        self.finished = threading.Event()
        self._env = None
        try:
            self._setup()
        except BaseException:
            self._close_env()
            super().destroy_node()
            raise

    def _setup(self) -> None:
        values = declare_parameters(self, SIM_NODE_PARAMETERS)
        problems = validate_sim_parameters(values)
        if problems:
            raise StartupError("invalid parameters: " + "; ".join(problems))
        self._values = values
        self.period_ns = period_ns(values["control_rate"])
        self.joint_names = list(values["joint_names"])
        # As the controller would: a late start is fine as long as the trajectory does not end in the past.
        self._rules = ControllerRules(tuple(self.joint_names), late_start_tolerance_ns=sys.maxsize)
        self.video_dir = Path(values["video_dir"]).expanduser() if values["video_dir"] else None
        self._open_env()
        self._schedule = TrajectorySchedule()
        self._throttle = Throttle(1.0)
        self._episode = 0
        self._state = "pause"  # pause -> running -> (pause | finished)
        self._resume_at_ns = 0
        self.trajectories_received = 0
        self.trajectories_rejected = 0
        self.observations_published = 0
        self._lockstep = values["lockstep"]
        self._sim_now_ns = self.get_clock().now().nanoseconds  # lockstep: simulated time, from the wall clock on
        self._observation_sent = False  # lockstep: this step's observation is out, its command awaited
        self._waiting_since: float | None = None
        self._stamped = values["observation_type"] == "joint_state"
        self._image = values["observation"] == "image"
        self._names = observation_names()[-2:] if self._image else observation_names()
        self._create_interfaces(values)
        self.get_logger().info(
            f"Push-T simulation at {values['control_rate']:g} Hz, first seed {values['seed']}, "
            f"{values['episodes'] or 'unlimited'} episode(s) of at most {values['max_steps']} steps; observations on "
            f"'{self._observation_pub.topic_name}'"
            + (f", {values['image_size']}x{values['image_size']} frames on '{self._image_pub.topic_name}'"
               if self._image else "")
            + f", trajectories from '{self._trajectory_sub.topic_name}'"
            + (f"; lockstep on simulated time ({CLOCK_TOPIC})" if self._lockstep else ""))

    def _open_env(self) -> None:
        try:
            from ..pusht.env import PushTKeypointsEnv

            self._env = PushTKeypointsEnv(render=self.video_dir is not None)
        except ImportError as err:
            raise StartupError("the Push-T simulation needs gym-pusht (pip install 'paradigms_policy[sim]'): "
                               f"{err}") from None
        if self.video_dir is not None:
            self.video_dir.mkdir(parents=True, exist_ok=True)

    def _create_interfaces(self, values: dict[str, Any]) -> None:
        try:
            self._observation_pub = self.create_publisher(JointState if self._stamped else Float32MultiArray,
                                                          values["observation_topic"], SENSOR_QOS)
            self._image_pub = self.create_publisher(Image, values["image_topic"], SENSOR_QOS) if self._image else None
            self._score_pub = self.create_publisher(Float32, values["score_topic"], SCORE_QOS)
            self._clock_pub = self.create_publisher(Clock, CLOCK_TOPIC, 10) if self._lockstep else None
            self._trajectory_sub = self.create_subscription(JointTrajectory, values["trajectory_topic"],
                                                            self._on_trajectory, RELIABLE_COMMANDS,
                                                            callback_group=MutuallyExclusiveCallbackGroup())
        except Exception as err:
            raise StartupError(f"cannot create the node's topics: {err}") from None
        tick_rate = values["control_rate"] * (values["max_real_time_factor"] if self._lockstep else 1.0)
        self._timer = self.create_timer(1.0 / tick_rate, self._tick, callback_group=MutuallyExclusiveCallbackGroup())

    @property
    def trajectory_publishers(self) -> int:
        """Trajectory publishers matched by the node's subscription."""
        return self._trajectory_sub.get_publisher_count()

    def _now(self) -> int:
        return self._sim_now_ns if self._lockstep else self.get_clock().now().nanoseconds

    # -- trajectories ----------------------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        """Take a trajectory that joint_trajectory_controller would accept (`control.trajectory_rules`)."""
        now = self._now()
        names, stamp, points = trajectory_fields(msg)
        problems = trajectory_problems(names, stamp, points, now, self._rules)
        if problems:
            with self._lock:
                self.trajectories_rejected += 1
            if self._throttle.allow("trajectory", now):
                self.get_logger().warning(f"trajectory rejected: {'; '.join(problems)}")
            return
        order = [names.index(name) for name in self.joint_names]
        start = stamp or now
        due = [start + point.time_from_start_ns for point in points]
        actions = np.array([[point.positions[i] for i in order] for point in points], dtype=np.float64)
        with self._lock:
            if self._state != "running":
                return  # between episodes: commands planned for the previous one are ignored
            self._schedule.insert(due, actions)
            self.trajectories_received += 1

    # -- simulation loop -------------------------------------------------------------------------
    def _tick(self) -> None:
        try:
            self._step()
        except Exception as err:  # keep ticking; report once a second
            if self._throttle.allow("tick", self.get_clock().now().nanoseconds):
                self.get_logger().error(f"simulation step failed: {type(err).__name__}: {err}")

    def _step(self) -> None:
        now = self._now()
        if self._lockstep:
            self._clock_pub.publish(Clock(clock=ns_to_time_msg(now)))
        with self._lock:
            state = self._state
        if state == "finished":
            return
        if state == "pause":
            if now < self._resume_at_ns or (self._lockstep and not self._policy_connected()):
                self._advance_simulated_time()
                return
            self._start_episode()
        if not self._observation_sent:
            self._publish_observation(now)
            self._observation_sent = True
        with self._lock:
            action, fresh = self._schedule.command_at(now, self.period_ns)
        if self._lockstep and not fresh and self._steps >= self._values["lockstep_warmup_steps"] \
                and not self._waited_too_long():
            return  # the policy is planning this step: simulated time stands still
        self._observation_sent = False
        self._waiting_since = None
        if action is None or not fresh:
            self._held_steps += 1
        if action is not None:
            self._target = np.clip(action, 0.0, 512.0)
        self._observation, coverage, done, _ = self._env.step(self._target)
        self._coverages.append(coverage)
        self._steps += 1
        if self.video_dir is not None:
            self._frames.append(self._env.render())
        if done or self._steps >= self._values["max_steps"]:
            self._end_episode(now)
        self._advance_simulated_time()

    def _advance_simulated_time(self) -> None:
        if self._lockstep:
            self._sim_now_ns += self.period_ns

    def _policy_connected(self) -> bool:
        """Lockstep: a policy node listens to the observations (and frames) and the clock and publishes trajectories."""
        listeners = [self._observation_pub, self._clock_pub] + ([self._image_pub] if self._image else [])
        return all(pub.get_subscription_count() > 0 for pub in listeners) and self.trajectory_publishers > 0

    def _waited_too_long(self) -> bool:
        """Lockstep: whether the wait for this step's command has lasted lockstep_timeout_s (then step without)."""
        wall = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = wall
        if wall - self._waiting_since < self._values["lockstep_timeout_s"]:
            return False
        self.get_logger().warning(f"lockstep: no command after {self._values['lockstep_timeout_s']:g} s of waiting; "
                                  "stepping with the last target", throttle_duration_sec=5.0)
        return True

    def _start_episode(self) -> None:
        seed = self._values["seed"] + self._episode
        self._observation = self._env.reset(seed=seed)
        self._seed = seed
        self._target = np.asarray(self._observation[-2:], dtype=np.float64)  # hold the agent where it stands
        self._coverages: list[float] = []
        self._steps = 0
        self._held_steps = 0
        self._frames: list[np.ndarray] = []
        with self._lock:
            self._schedule.clear()
            self._state = "running"
        if self.video_dir is not None:
            self._frames.append(self._env.render())

    def _publish_observation(self, now: int) -> None:
        """The observation stamped `now`; for an image policy the agent position and the frame, stamped alike."""
        values = [float(v) for v in (self._observation[-2:] if self._image else self._observation)]
        if self._stamped:
            msg = JointState()
            msg.header.stamp = ns_to_time_msg(now)
            msg.name = self._names
            msg.position = values
        else:
            msg = Float32MultiArray()
            msg.data = values
        self._observation_pub.publish(msg)
        if self._image:
            self._image_pub.publish(self._frame_message(msg.header))
        self.observations_published += 1

    def _frame_message(self, header) -> Image:
        """The current scene as the policy's camera sees it (rgb8, image_size square), with `header`'s stamp."""
        frame = self._env.frame(self._values["image_size"])
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding="rgb8", step=3 * frame.shape[1])
        msg.header.stamp = header.stamp
        msg.header.frame_id = CAMERA_FRAME
        msg.data = array.array("B", frame.tobytes())
        return msg

    def _end_episode(self, now: int) -> None:
        from ..pusht.env import episode_score

        score, success = episode_score(self._coverages)
        result = {"episode": self._episode, "seed": self._seed, "score": score, "success": success,
                  "max_coverage": float(max(self._coverages)), "steps": self._steps, "held_steps": self._held_steps}
        video = self._write_video()
        if video is not None:
            result["video"] = str(video)
        self._score_pub.publish(Float32(data=float(score)))
        self._episode += 1
        episodes = self._values["episodes"]
        with self._lock:
            self._schedule.clear()
            self.results.append(result)
            if episodes and self._episode >= episodes:
                self._state = "finished"
            else:
                self._state = "pause"
                self._resume_at_ns = now + int(self._values["reset_pause_s"] * NS_PER_S)
        self.get_logger().info(
            f"episode {result['episode'] + 1} (seed {self._seed}): score {score:.3f}, "
            f"{'success' if success else 'no success'}, {self._steps} steps "
            f"({self._held_steps} without a fresh command)")
        if self._state == "finished":
            self.finished.set()

    def _write_video(self) -> Path | None:
        if self.video_dir is None or not self._frames:
            return None
        import imageio.v2 as imageio

        fps = self._values["control_rate"]
        path = self.video_dir / f"pusht_seed{self._seed}.mp4"
        try:
            imageio.mimsave(path, self._frames, fps=fps)
        except Exception:  # no ffmpeg backend: fall back to a GIF
            path = path.with_suffix(".gif")
            imageio.mimsave(path, self._frames, duration=1.0 / fps)
        self._frames = []
        return path

    # -- shutdown --------------------------------------------------------------------------------
    def _close_env(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def request_stop(self) -> None:
        """The process is ending: no further simulation step."""
        self._timer.cancel()

    def destroy_node(self) -> None:
        if hasattr(self, "_timer"):
            self._timer.cancel()
        super().destroy_node()
        self._close_env()


def main(args: list[str] | None = None) -> int:
    """`ros2 run paradigms_policy pusht_sim_node [--ros-args --params-file config/pusht_sim.yaml ...]`."""
    return run_node(PushTSimNode, "pusht_sim_node", args, SUMMARY, SIM_NODE_PARAMETERS)


if __name__ == "__main__":
    sys.exit(main())
