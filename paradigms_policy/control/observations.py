"""Checks of incoming observations and the window of the last n_obs_steps of them."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .timing import NS_PER_MS

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


