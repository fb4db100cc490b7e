"""Trajectory playback on the simulation side: the command due at each control tick."""
from __future__ import annotations

from typing import Sequence

import numpy as np


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
