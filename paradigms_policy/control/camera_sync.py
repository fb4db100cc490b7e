"""Camera frames of an image policy: their checks, their conversion to the policy's input, and the
assembly of window steps from a joint state and one frame per camera with matching stamps.

    frame (rgb8 or bgr8, the camera key's H x W)  --frame_input-->  float32 (3, H, W) in [0, 1]
    joint state stamped s + for every camera its frame nearest s within the tolerance
        --CameraSync.complete-->  one window step {key: array}, stamped s

A rejected frame's reason is one of observations.FRAME_REJECT_REASONS. ROS-free: ros/image_inputs.py
hands in each sensor_msgs/Image's fields as a `RawFrame`.
"""
from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..vision import image_input
from .observations import StampGate, Verdict
from .timing import NS_PER_MS

FRAME_ENCODINGS = ("rgb8", "bgr8")
# A camera is silent when its newest frame is this many control periods (plus the tolerance) behind
# the newest joint state: twice the gap after which the window is no longer contiguous, and more.
SILENT_PERIODS = 3
KEPT = 8  # frames per camera, and joint states awaiting frames, kept for matching


@dataclass(frozen=True)
class Camera:
    """One image key of the policy: the frame size it takes and the topic its frames come on."""

    key: str
    height: int
    width: int
    topic: str


@dataclass(frozen=True)
class RawFrame:
    """The fields of a sensor_msgs/Image: `height` rows of `step` bytes in `data` (a bytes-like buffer)."""

    stamp_ns: int
    height: int
    width: int
    encoding: str
    step: int
    data: object


def default_image_topic(key: str) -> str:
    """A key's name as a relative topic; characters a topic name cannot hold become '_'
    (LeRobot's 'observation.image' -> 'observation_image')."""
    return re.sub(r"[^A-Za-z0-9_/]", "_", key)


def policy_cameras(config, topics: Sequence[str] = ()) -> list[Camera]:
    """The policy's cameras in config order, on `topics` (aligned with its image keys) or, when that is
    empty, each on its key's name (`default_image_topic`)."""
    specs = [spec for spec in config.observations if spec.kind == "image"]
    topics = list(topics) or [default_image_topic(spec.key) for spec in specs]
    return [Camera(spec.key, spec.shape[1], spec.shape[2], topic) for spec, topic in zip(specs, topics)]


def frame_input(frame: RawFrame, camera: Camera) -> tuple[Verdict, np.ndarray | None]:
    """(verdict, the policy's input for the frame: float32 (3, H, W) in [0, 1] from `vision.image_input`
    of its RGB pixels), None when rejected: wrong_encoding, wrong_size (not the camera's H x W) or
    bad_layout (step shorter than a row, or data not step x height bytes)."""
    if frame.encoding not in FRAME_ENCODINGS:
        return Verdict(False, "wrong_encoding", f"encoding is {frame.encoding!r}, the node takes "
                                                f"{' or '.join(FRAME_ENCODINGS)}"), None
    if (frame.height, frame.width) != (camera.height, camera.width):
        return Verdict(False, "wrong_size", f"frame is {frame.height}x{frame.width} (HxW), camera "
                                            f"'{camera.key}' takes {camera.height}x{camera.width}"), None
    row = 3 * frame.width
    data = np.frombuffer(frame.data, dtype=np.uint8)
    if frame.step < row or data.size != frame.step * frame.height:
        return Verdict(False, "bad_layout", f"step {frame.step} and {data.size} bytes of data do not hold "
                                            f"{frame.height} rows of {row} bytes (step >= {row}, "
                                            "data = step x height bytes)"), None
    pixels = data.reshape(frame.height, frame.step)[:, :row].reshape(frame.height, frame.width, 3)
    return Verdict(True), image_input(pixels[..., ::-1] if frame.encoding == "bgr8" else pixels)


class CameraSync:
    """Window steps from joint states and camera frames whose stamps match (accessed under one lock).

    A joint state (already accepted by the node's ObservationGate) waits until every camera has an
    accepted frame within `tolerance_ns` of its stamp; the newest such complete set becomes a step
    stamped with the joint state's stamp, made of its low-dim parts and each camera's nearest frame.
    Nothing stale is used: with max_age_ns > 0, a joint state or frame older than that at completion
    is not, and joint states older than a completed one are dropped (counted in `unmatched`).
    """

    def __init__(self, cameras: Sequence[Camera], tolerance_ns: int, max_age_ns: int, period_ns: int):
        self.cameras = list(cameras)
        self.tolerance_ns = tolerance_ns
        self.silent_after_ns = SILENT_PERIODS * period_ns + tolerance_ns
        self._gates = {camera.key: StampGate(max_age_ns, f"frame of camera '{camera.key}'") for camera in cameras}
        self._max_age_ns = max_age_ns
        self.unmatched = 0  # joint states dropped without a complete set
        self.clear()

    def clear(self) -> None:
        """Forget the frames and the joint states waiting for them (the node was deactivated)."""
        self._frames: dict[str, deque[tuple[int, np.ndarray]]] = {c.key: deque(maxlen=KEPT) for c in self.cameras}
        self._pending: deque[tuple[int, dict[str, np.ndarray]]] = deque()  # oldest first
        self._first_joint_state_ns: int | None = None
        self._newest_joint_state_ns: int | None = None

    @property
    def max_age_ns(self) -> int:
        return self._max_age_ns

    @max_age_ns.setter
    def max_age_ns(self, value: int) -> None:
        self._max_age_ns = value
        for gate in self._gates.values():
            gate.max_age_ns = value

    def add_frame(self, key: str, stamp_ns: int, image: np.ndarray, now_ns: int) -> Verdict:
        """A checked frame of camera `key` (`frame_input`'s image); its stamp is checked as observations' are."""
        verdict = self._gates[key].check_stamp(stamp_ns, now_ns)
        if verdict.accepted:
            self._frames[key].append((stamp_ns, image))
        return verdict

    def add_joint_state(self, low_dim: dict[str, np.ndarray], stamp_ns: int) -> None:
        """An accepted joint state's low-dim parts ({key: (n,)}, `observations.low_dim_parts`)."""
        if len(self._pending) == KEPT:
            self._pending.popleft()
            self.unmatched += 1
        self._pending.append((stamp_ns, low_dim))
        if self._first_joint_state_ns is None:
            self._first_joint_state_ns = stamp_ns
        self._newest_joint_state_ns = stamp_ns

    def complete(self, now_ns: int) -> tuple[dict[str, np.ndarray], int] | None:
        """(window step {key: array}, the joint state's stamp) of the newest complete set, or None; that
        joint state and the older ones waiting are dropped."""
        while self._pending and not self._fresh(self._pending[0][0], now_ns):
            self._pending.popleft()
            self.unmatched += 1
        for index in range(len(self._pending) - 1, -1, -1):
            stamp, low_dim = self._pending[index]
            images = self._frames_near(stamp, now_ns)
            if images is not None:
                for _ in range(index + 1):
                    self._pending.popleft()
                self.unmatched += index
                return {**images, **low_dim}, stamp
        return None

    def _fresh(self, stamp_ns: int, now_ns: int) -> bool:
        return self._max_age_ns <= 0 or now_ns - stamp_ns <= self._max_age_ns

    def _frames_near(self, stamp_ns: int, now_ns: int) -> dict[str, np.ndarray] | None:
        """Every camera's fresh frame nearest `stamp_ns` within the tolerance, or None if one has none."""
        images = {}
        for key, frames in self._frames.items():
            near = [(abs(frame_stamp - stamp_ns), image) for frame_stamp, image in frames
                    if abs(frame_stamp - stamp_ns) <= self.tolerance_ns and self._fresh(frame_stamp, now_ns)]
            if not near:
                return None
            images[key] = min(near, key=lambda candidate: candidate[0])[1]
        return images

    def silent_cameras(self) -> list[str]:
        """The cameras whose newest frame (or, without one, the first joint state) is more than
        `silent_after_ns` older than the newest joint state: no set completes while they stay silent."""
        newest = self._newest_joint_state_ns
        if newest is None:
            return []
        return [key for key, frames in self._frames.items()
                if newest - (frames[-1][0] if frames else self._first_joint_state_ns) > self.silent_after_ns]

    def statistics(self, now_ns: int) -> dict[str, object]:
        """Per camera the age (ms) of its newest frame (None without one), the silent cameras, and the
        joint states dropped unmatched."""
        stats: dict[str, object] = {f"camera_{key}_frame_age_ms": (now_ns - frames[-1][0]) / NS_PER_MS if frames
                                    else None for key, frames in self._frames.items()}
        stats.update(silent_cameras=self.silent_cameras(), observations_unmatched=self.unmatched)
        return stats
