"""The policy node's /diagnostics status: level and message from what changed since the last report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK, WARN, ERROR = "ok", "warn", "error"
# Counters whose growth since the last report sets the level; frames_rejected only for an image policy.
WATCHED = ("deadline_misses", "observations_rejected", "frames_rejected", "inference_errors")


def format_value(value: Any) -> str:
    """A statistic as a diagnostics value: floats with 3 decimals, None as n/a, lists comma-separated."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


@dataclass(frozen=True)
class Report:
    level: str  # OK, WARN or ERROR
    message: str
    values: list[tuple[str, str]]  # every statistic, formatted


class DiagnosticsReporter:
    """ERROR after new inference errors or while a camera is silent (`silent_cameras`, image policies),
    WARN after new deadline misses or rejected observations or frames, else OK."""

    def __init__(self):
        self._last = dict.fromkeys(WATCHED, 0)

    def report(self, stats: dict[str, Any]) -> Report:
        new = {key: stats.get(key, 0) - last for key, last in self._last.items()}
        self._last = {key: stats.get(key, 0) for key in WATCHED}
        silent = stats.get("silent_cameras") or []
        if new["inference_errors"]:
            level, message = ERROR, f"{new['inference_errors']} inference error(s)"
        elif silent:
            level = ERROR
            message = f"no frame from camera(s) {', '.join(silent)}: no complete observation, so no inference"
        elif new["deadline_misses"] or new["observations_rejected"] or new["frames_rejected"]:
            level = WARN
            frames = f", {new['frames_rejected']} rejected frame(s)" if "frames_rejected" in stats else ""
            message = (f"{new['deadline_misses']} deadline miss(es), {new['observations_rejected']} rejected "
                       f"observation(s){frames} since the last report")
        else:
            level, message = OK, "ok"
        return Report(level, message, [(key, format_value(value)) for key, value in stats.items()])
