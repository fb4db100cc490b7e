"""Memory of the running process: RSS from /proc/self/status, the traced Python heap, growth slopes.

Plain Python (the soak samples a node's process with it); no ROS needed.
"""
from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any


def read_process_status() -> dict[str, float]:
    """The numeric fields of /proc/self/status (KiB for memory, a count for Threads); {} where it is absent."""
    fields: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                parts = value.split()
                if parts and parts[0].isdigit():
                    fields[name] = float(parts[0])
    except OSError:
        pass
    return fields


def read_rss_kib() -> tuple[float, str]:
    """The process's resident set size in KiB and where it came from."""
    rss = read_process_status().get("VmRSS")
    if rss is not None:
        return rss, "VmRSS"
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 1024.0 if sys.platform == "darwin" else float(peak)), "ru_maxrss (peak)"


def read_memory_details() -> dict[str, float]:
    """RssAnon, RssFile (mapped files, e.g. libraries paged in) and RssShmem in KiB, and the thread count."""
    wanted = {"RssAnon": "rss_anon_kib", "RssFile": "rss_file_kib", "RssShmem": "rss_shmem_kib", "Threads": "threads"}
    status = read_process_status()
    return {key: status[field] for field, key in wanted.items() if field in status}


def read_peak_rss_kib() -> float | None:
    return read_process_status().get("VmHWM")


def slope_per_1000(cycles: list[float], values: list[float]) -> float | None:
    """Least-squares slope of `values` against `cycles`, per 1000 cycles (None below 2 points)."""
    n = len(cycles)
    if n < 2:
        return None
    mean_x = sum(cycles) / n
    mean_y = sum(values) / n
    sxx = sum((x - mean_x) ** 2 for x in cycles)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(cycles, values))
    return 1000.0 * sxy / sxx


class MemorySampler:
    """Samples of the process's RSS (and with `traced` the tracemalloc heap), one per call of `sample`;
    with `traced` also a heap snapshot at the end of the warm-up, compared at `finish`."""

    def __init__(self, traced: bool, warmup_cycles: int):
        self.traced = traced
        self.warmup_cycles = warmup_cycles
        self.samples: list[dict[str, Any]] = []
        self.rss_source: str | None = None
        self._snapshot = None
        if traced:
            tracemalloc.start()
        self.started = time.monotonic()

    def sample(self, cycle: int, **values) -> None:
        if self.traced and cycle == self.warmup_cycles and self._snapshot is None:
            self._snapshot = tracemalloc.take_snapshot()
        rss, self.rss_source = read_rss_kib()
        entry = {"cycle": cycle, "t_s": round(time.monotonic() - self.started, 3), "rss_kib": rss, **values}
        entry.update(read_memory_details())
        if self.traced:
            entry["heap_kib"] = tracemalloc.get_traced_memory()[0] / 1024.0
        self.samples.append(entry)

    def finish(self) -> list[dict[str, Any]] | None:
        """Stop tracing; the sites whose heap grew most after the warm-up (None without tracing)."""
        if not self.traced:
            return None
        sites = heap_growth_sites(self._snapshot, tracemalloc.take_snapshot()) if self._snapshot else None
        tracemalloc.stop()
        return sites


def heap_growth_sites(before, after, limit: int = 10) -> list[dict[str, Any]]:
    """The source lines whose traced allocations grew most between two tracemalloc snapshots."""
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "lineno")
    return [{"site": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
             "growth_kib": round(stat.size_diff / 1024.0, 1), "count_growth": stat.count_diff}
            for stat in stats[:limit]]
