"""Rolling statistics of the nodes: latencies, time per sampler round, throttled warnings."""
from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

import numpy as np

from .timing import seconds_to_ns


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
