"""The policy node's bookkeeping: counters, latency statistics and the log of recent chunks.

Thread-safe: the executor thread records observations and reads statistics while the inference
thread records chunks. A chunk record is a flat dict: stamp_ns, latency_s, ready_age_s, rounds,
model_evals, converged, round_cap, published, and first_index and points when published or miss
(one of MISS_KINDS) when not. With `frames` (an image policy's node) it also counts the camera
frames received, accepted and rejected by reason (FRAME_REJECT_REASONS, see control/camera_sync.py).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from .observations import FRAME_REJECT_REASONS, REJECT_REASONS, Verdict
from .statistics import RollingStats
from .timing import NS_PER_S, TimedChunk

MISS_KINDS = ("late", "no_time", "outdated")
COUNTERS = ("observations_received", "observations_accepted", "chunks_published", "deadline_misses",
            *(f"miss_{kind}" for kind in MISS_KINDS), "inferences", "inference_errors", "actions_dropped_outdated",
            "actions_clipped", "chunks_not_converged", "windows_not_contiguous", "chunks_abandoned", "rtc_overruns")
# Chunk records kept for statistics and the demo: enough for several episodes, bounded for long runs.
CHUNK_LOG_LENGTH = 500


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _tally(counters: dict[str, int], rejected: dict[str, int], what: str, verdict: Verdict) -> None:
    """One more `what`_received, and one more `what`_accepted or one more rejection for the verdict's reason."""
    counters[f"{what}_received"] += 1
    if verdict.accepted:
        counters[f"{what}_accepted"] += 1
    else:
        rejected[verdict.reason] += 1


class ChunkLedger:
    """What the node has received, computed and published since it started."""

    def __init__(self, log_length: int = CHUNK_LOG_LENGTH, samples: int = 1000, frames: bool = False):
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._rejected = dict.fromkeys(REJECT_REASONS, 0)
        self._frames = dict.fromkeys(("frames_received", "frames_accepted"), 0) if frames else None
        self._frames_rejected = dict.fromkeys(FRAME_REJECT_REASONS, 0)
        self._latency = RollingStats(samples)  # inference (predict), seconds
        self._ready_age = RollingStats(samples)  # observation stamp -> chunk ready, seconds
        self._rounds = RollingStats(samples)
        self._log: deque[dict[str, Any]] = deque(maxlen=log_length)
        self._logged = 0  # every record ever logged, also those the bounded log has let go

    # -- recording -------------------------------------------------------------------------------
    def observation(self, verdict: Verdict) -> None:
        with self._lock:
            _tally(self._counters, self._rejected, "observations", verdict)

    def frame(self, verdict: Verdict) -> None:
        """A camera frame and its verdict (a ledger made with `frames`)."""
        with self._lock:
            _tally(self._frames, self._frames_rejected, "frames", verdict)

    def count(self, counter: str) -> None:
        """One more of `counter` (inference_errors, windows_not_contiguous, chunks_abandoned)."""
        with self._lock:
            self._counters[counter] += 1

    def inference(self, stamp_ns: int, ready_ns: int, latency_s: float, stats, round_cap: int | None) -> dict[str, Any]:
        """Record an inference (sampler stats: rounds, model_evals, converged); returns its chunk record."""
        ready_age_s = (ready_ns - stamp_ns) / NS_PER_S
        with self._lock:
            self._counters["inferences"] += 1
            self._counters["chunks_not_converged"] += int(not stats.converged)
            self._latency.add(latency_s)
            self._ready_age.add(ready_age_s)
            self._rounds.add(stats.rounds)
        return {"stamp_ns": stamp_ns, "latency_s": latency_s, "ready_age_s": ready_age_s, "rounds": stats.rounds,
                "model_evals": stats.model_evals, "converged": stats.converged, "round_cap": round_cap,
                "published": False}

    def published(self, record: dict[str, Any], chunk: TimedChunk) -> None:
        record.update(published=True, first_index=chunk.first_index, points=len(chunk))
        with self._lock:
            self._counters["chunks_published"] += 1
            self._counters["actions_dropped_outdated"] += chunk.dropped
            self._counters["actions_clipped"] += chunk.clipped
            self._append(record)

    def missed(self, kind: str, stamp_ns: int, record: dict[str, Any] | None = None) -> None:
        """A deadline miss of `kind` (MISS_KINDS); `record` is None when no inference ran."""
        if record is None:
            record = {"stamp_ns": stamp_ns, "latency_s": None, "ready_age_s": None, "rounds": 0, "model_evals": 0,
                      "converged": False, "round_cap": None}
        record.update(published=False, miss=kind)
        with self._lock:
            self._counters["deadline_misses"] += 1
            self._counters[f"miss_{kind}"] += 1
            self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        self._log.append(record)
        self._logged += 1

    # -- reading ---------------------------------------------------------------------------------
    @property
    def chunk_count(self) -> int:
        """Chunk records ever logged (published chunks and misses)."""
        with self._lock:
            return self._logged

    def records(self) -> list[dict[str, Any]]:
        """The most recent chunk records (at most the log length), oldest first."""
        with self._lock:
            return list(self._log)

    def records_since(self, count: int) -> tuple[list[dict[str, Any]], int]:
        """(the records logged after the first `count` ever logged, as far as the log still holds them,
        the number of records ever logged): pass the second to the next call to get only newer ones."""
        with self._lock:
            new = min(self._logged - count, len(self._log))
            return (list(self._log)[len(self._log) - new:] if new > 0 else []), self._logged

    def statistics(self) -> dict[str, Any]:
        """Counters, rejections by reason (of frames too, with `frames`) and latency statistics (latencies
        in milliseconds)."""
        with self._lock:
            stats: dict[str, Any] = dict(self._counters)
            stats.update({f"rejected_{reason}": count for reason, count in self._rejected.items()})
            stats["observations_rejected"] = sum(self._rejected.values())
            if self._frames is not None:
                stats.update(self._frames, frames_rejected=sum(self._frames_rejected.values()))
                stats.update({f"frames_rejected_{reason}": n for reason, n in self._frames_rejected.items()})
            stats.update(latency_p50_ms=_ms(self._latency.p50()), latency_p99_ms=_ms(self._latency.p99()),
                         latency_max_ms=_ms(self._latency.max()), ready_age_p50_ms=_ms(self._ready_age.p50()),
                         ready_age_p99_ms=_ms(self._ready_age.p99()), rounds_p50=self._rounds.p50(),
                         rounds_max=self._rounds.max(), rounds_mean=self._rounds.mean())
        return stats
