"""Checks of incoming observations and the window of the last n_obs_steps of them.

A window step is one obs_dim vector for a low-dim policy, or for an image policy a dict
{key: array of the key's shape} (images channels first in [0, 1], low-dim keys from the joint
state, see `low_dim_parts`); `ObservationWindow.snapshot` stacks it into what `policy.predict` takes.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .timing import NS_PER_MS

REJECT_REASONS = ("wrong_length", "non_finite", "no_stamp", "stale", "future", "out_of_order")
# Camera frames (control/camera_sync.py): the frame checks, then those of StampGate.
FRAME_REJECT_REASONS = ("wrong_encoding", "wrong_size", "bad_layout", "no_stamp", "stale", "future", "out_of_order")
NEUTRAL_GREY = 0.5  # the warm-up's frames: mid-grey in the policy's [0, 1] image units


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str = ""  # one of REJECT_REASONS (camera frames: FRAME_REJECT_REASONS) when rejected
    message: str = ""


class StampGate:
    """Checks a stream's stamps: rejected are a zero stamp, a stamp older than `max_age_ns` (0 disables
    the age check) or further than that in the future, and one not newer than the last accepted one."""

    def __init__(self, max_age_ns: int, what: str = "observation"):
        self.max_age_ns = max_age_ns
        self.what = what  # the stream's name in the messages
        self.last_stamp_ns: int | None = None

    def check_stamp(self, stamp_ns: int, now_ns: int) -> Verdict:
        """The verdict on `stamp_ns` at `now_ns`; an accepted stamp becomes the last accepted one."""
        if stamp_ns == 0:
            return Verdict(False, "no_stamp", f"{self.what} has a zero header.stamp")
        age = now_ns - stamp_ns
        if self.max_age_ns > 0 and age > self.max_age_ns:
            return Verdict(False, "stale", f"{self.what} is {age / NS_PER_MS:.1f} ms old "
                                           f"(max_observation_age_ms = {self.max_age_ns / NS_PER_MS:g})")
        if self.max_age_ns > 0 and -age > self.max_age_ns:
            return Verdict(False, "future", f"{self.what} is stamped {-age / NS_PER_MS:.1f} ms in the future")
        if self.last_stamp_ns is not None and stamp_ns <= self.last_stamp_ns:
            return Verdict(False, "out_of_order",
                           f"{self.what} stamp is {(self.last_stamp_ns - stamp_ns) / NS_PER_MS:.1f} ms "
                           "older than (or equal to) the last accepted one")
        self.last_stamp_ns = stamp_ns
        return Verdict(True)


class ObservationGate(StampGate):
    """Checks each incoming observation before it may enter the window.

    Rejected: a vector of the wrong length; NaN or Inf; (stamped mode) what `StampGate` rejects.
    """

    def __init__(self, obs_dim: int, max_age_ns: int, stamped: bool = True):
        super().__init__(max_age_ns)
        self.obs_dim = obs_dim
        self.stamped = stamped

    def check(self, values, stamp_ns: int, now_ns: int) -> Verdict:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != self.obs_dim:
            return Verdict(False, "wrong_length",
                           f"observation has {values.size} values, the policy expects {self.obs_dim}")
        if not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            return Verdict(False, "non_finite", f"observation contains {bad} NaN/Inf value(s)")
        if not self.stamped:
            return Verdict(True)
        return self.check_stamp(stamp_ns, now_ns)


def step_layout(config) -> dict[str, tuple[int, ...]] | None:
    """{key: shape} of a window step of an image policy ([C, H, W] images, [n] low-dim keys);
    None for a low-dim policy, whose step is one obs_dim vector."""
    if not config.image_keys:
        return None
    return {spec.key: tuple(spec.shape) for spec in config.observations}


def low_dim_parts(config, values) -> dict[str, np.ndarray]:
    """An image policy's obs_dim low-dim values (its low-dim keys concatenated in config order) split
    into {key: float32 (n,)}."""
    values = np.asarray(values, dtype=np.float32).reshape(config.obs_dim)
    parts, start = {}, 0
    for spec in config.observations:
        if spec.kind == "low_dim":
            parts[spec.key] = values[start:start + spec.size]
            start += spec.size
    return parts


def neutral_window(config, low_dim) -> np.ndarray | dict[str, np.ndarray]:
    """A window repeating `low_dim` (obs_dim values) n_obs_steps times: (n_obs_steps, obs_dim), or for
    an image policy {key: (n_obs_steps, *shape)} with mid-grey frames (the warm-up's input)."""
    steps = config.n_obs_steps
    layout = step_layout(config)
    if layout is None:
        return np.tile(np.asarray(low_dim, dtype=np.float32), (steps, 1))
    window = {key: np.full((steps, *shape), NEUTRAL_GREY, dtype=np.float32) for key, shape in layout.items()}
    window.update({key: np.tile(part, (steps, 1)) for key, part in low_dim_parts(config, low_dim).items()})
    return window


class ObservationWindow:
    """The last n observation steps with their stamps; a window is usable when its stamps are contiguous.

    A step is an obs_dim vector, or with `layout` ({key: shape}, `step_layout`) a dict of arrays.
    """

    def __init__(self, n_obs_steps: int, obs_dim: int, layout: dict[str, tuple[int, ...]] | None = None):
        self.n_obs_steps = n_obs_steps
        self.obs_dim = obs_dim
        self.layout = layout
        self._items: deque[tuple[int, np.ndarray | dict[str, np.ndarray]]] = deque(maxlen=n_obs_steps)
        self.sequence = 0  # number of observations ever pushed

    def push(self, values, stamp_ns: int) -> None:
        """Append a step: obs_dim values, or (with a layout) {key: array of the key's shape}; copied as float32."""
        if self.layout is None:
            step = np.asarray(values, dtype=np.float32).reshape(self.obs_dim).copy()
        else:
            step = {key: np.array(values[key], dtype=np.float32).reshape(shape) for key, shape in self.layout.items()}
        self._items.append((stamp_ns, step))
        self.sequence += 1

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    def newest_stamp(self) -> int | None:
        return self._items[-1][0] if self._items else None

    def snapshot(self, max_gap_ns: int) -> tuple[np.ndarray | dict[str, np.ndarray], int] | None:
        """(window, newest stamp), or None if not full or a gap exceeds max_gap_ns. The window is
        (n_obs_steps, obs_dim), or with a layout {key: (n_obs_steps, *shape)}."""
        if len(self._items) < self.n_obs_steps:
            return None
        stamps = [stamp for stamp, _ in self._items]
        if any(later - earlier > max_gap_ns for earlier, later in zip(stamps, stamps[1:])):
            return None
        steps = [values for _, values in self._items]
        if self.layout is None:
            return np.stack(steps), stamps[-1]
        return {key: np.stack([step[key] for step in steps]) for key in self.layout}, stamps[-1]
