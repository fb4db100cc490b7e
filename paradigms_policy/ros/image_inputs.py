"""The policy node's inputs: the observation topic and, for an image policy, one camera topic per image key.

Mixed into `PolicyBehaviour` (policy_core.py); every callback runs on the executor thread and only
checks, converts and appends, under the node's lock.

    observation (JointState or Float32MultiArray) --ObservationGate--> low-dim policy: a window step
    image policy: JointState (position = the low-dim keys in config order) --ObservationGate-->
        + per camera sensor_msgs/Image (rgb8 or bgr8, the key's H x W) --frame_input, StampGate-->
        --CameraSync: the newest joint state with a frame of every camera within
          image_stamp_tolerance_ms of its stamp--> a window step {key: array}, stamped as the joint state

Rejected frames are counted by reason in the ledger (frames_rejected_<reason>) and warned about
(throttled). The statistics, and so /diagnostics, give each camera's newest frame age and publisher
count, the joint states dropped without a complete set (observations_unmatched) and the silent
cameras: those whose frames stopped while joint states keep coming, which stops inference.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray

from ..control.camera_sync import Camera, CameraSync, RawFrame, frame_input, policy_cameras
from ..control.observations import low_dim_parts
from ..control.timing import NS_PER_MS
from .common import SENSOR_QOS, stamp_to_ns


class ObservationInputs:
    """Observations and camera frames in, window steps out (see the module docstring)."""

    def _init_cameras(self, values: dict[str, Any]) -> None:
        """The camera synchroniser of an image policy; None for a low-dim one."""
        config = self.policy.config
        self._cameras: CameraSync | None = None
        self._frame_subscriptions: list = []
        if config.image_keys:
            self._cameras = CameraSync(policy_cameras(config, values["image_topics"]),
                                       int(values["image_stamp_tolerance_ms"] * NS_PER_MS),
                                       int(values["max_observation_age_ms"] * NS_PER_MS), self.period_ns)

    @property
    def cameras(self) -> list[Camera]:
        """The policy's cameras (image key, frame size, topic) in config order; [] for a low-dim policy."""
        return self._cameras.cameras if self._cameras is not None else []

    def _create_camera_subscriptions(self) -> list[tuple[Any, Any]]:
        """One Image subscription per camera (sensor-data QoS); their (destroy method, subscription) pairs."""
        self._frame_subscriptions = [
            self.create_subscription(Image, camera.topic, partial(self._on_frame, camera), SENSOR_QOS,
                                     callback_group=MutuallyExclusiveCallbackGroup()) for camera in self.cameras]
        return [(self.destroy_subscription, subscription) for subscription in self._frame_subscriptions]

    def _describe_inputs(self) -> str:
        text = f"observations on '{self._subscription.topic_name}'"
        if self._cameras is None:
            return text
        frames = ", ".join(f"'{camera.key}' on '{subscription.topic_name}'"
                           for camera, subscription in zip(self.cameras, self._frame_subscriptions))
        return f"{text}, frames of {frames} (stamps within {self._cameras.tolerance_ns / NS_PER_MS:g} ms)"

    def _clear_observations(self) -> None:
        """Empty the window and forget the frames and joint states awaiting a set (under the lock)."""
        self._window.clear()
        if self._cameras is not None:
            self._cameras.clear()

    def _camera_statistics(self) -> dict[str, Any]:
        """Per camera the newest frame's age (ms) and its publishers, the silent cameras, the unmatched joint states."""
        if self._cameras is None:
            return {}
        with self._lock:
            stats = self._cameras.statistics(self._now_ns())
        stats.update({f"camera_{camera.key}_publishers": subscription.get_publisher_count()
                      for camera, subscription in zip(self.cameras, self._frame_subscriptions)})
        return stats

    # -- callbacks (executor thread) ---------------------------------------------------------------
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_joint_state(self, msg: JointState) -> None:
        self._accept(msg.position, stamp_to_ns(msg.header.stamp))

    def _on_array(self, msg: Float32MultiArray) -> None:
        self._accept(msg.data, None)

    def _accept(self, values, stamp_ns: int | None) -> None:
        try:
            now = self._now_ns()
            stamp = now if stamp_ns is None else stamp_ns
            vector = np.asarray(values, dtype=np.float64).reshape(-1)
            with self._lock:
                if not self._active:
                    return  # inactive: observations are not taken
                verdict = self._gate.check(vector, stamp, now)
                if verdict.accepted:
                    self._take_observation(vector, stamp, now)
            self.ledger.observation(verdict)
            if not verdict.accepted and self._throttle.allow(f"reject:{verdict.reason}", now):
                self.get_logger().warning(f"observation rejected ({verdict.reason}): {verdict.message}; "
                                          "no action is planned from it")
        except Exception as err:  # never let bad input kill the node
            if self._throttle.allow("reject:error", self._now_ns()):
                self.get_logger().error(f"observation could not be handled: {type(err).__name__}: {err}")

    def _on_frame(self, camera: Camera, msg: Image) -> None:
        try:
            now = self._now_ns()
            frame = RawFrame(stamp_to_ns(msg.header.stamp), msg.height, msg.width, msg.encoding, msg.step, msg.data)
            verdict, image = frame_input(frame, camera)  # outside the lock: the conversion takes the longest
            with self._lock:
                if not self._active:
                    return  # inactive: frames are not taken
                if verdict.accepted:
                    verdict = self._cameras.add_frame(camera.key, frame.stamp_ns, image, now)
                if verdict.accepted:
                    self._push_complete_set(now)
            self.ledger.frame(verdict)
            if not verdict.accepted and self._throttle.allow(f"frame:{camera.key}:{verdict.reason}", now):
                self.get_logger().warning(f"frame of camera '{camera.key}' rejected ({verdict.reason}): "
                                          f"{verdict.message}; it is not used")
        except Exception as err:  # never let bad input kill the node
            if self._throttle.allow("frame:error", self._now_ns()):
                self.get_logger().error(f"frame of camera '{camera.key}' could not be handled: "
                                        f"{type(err).__name__}: {err}")

    # -- window steps (under the lock) -------------------------------------------------------------
    def _take_observation(self, vector: np.ndarray, stamp: int, now: int) -> None:
        """An accepted observation: a window step, or for an image policy the joint state of a set."""
        if self._cameras is None:
            self._push_step(vector, stamp)
            return
        self._cameras.add_joint_state(low_dim_parts(self.policy.config, vector), stamp)
        self._push_complete_set(now)

    def _push_complete_set(self, now: int) -> None:
        completed = self._cameras.complete(now)
        if completed is not None:
            self._push_step(*completed)

    def _push_step(self, step, stamp: int) -> None:
        self._window.push(step, stamp)
        self._wakeup.notify()
