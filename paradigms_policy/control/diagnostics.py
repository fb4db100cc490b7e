"""The policy node's /diagnostics status: level and message from what changed since the last report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK, WARN, ERROR = "ok", "warn", "error"


def format_value(value: Any) -> str:
    """A statistic as a diagnostics value: floats with 3 decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@dataclass(frozen=True)
class Report:
    level: str  # OK, WARN or ERROR
    message: str
    values: list[tuple[str, str]]  # every statistic, formatted


class DiagnosticsReporter:
    """ERROR after new inference errors, WARN after new deadline misses or rejected observations, else OK."""

    def __init__(self):
        self._last = {"deadline_misses": 0, "observations_rejected": 0, "inference_errors": 0}

    def report(self, stats: dict[str, Any]) -> Report:
        new = {key: stats[key] - last for key, last in self._last.items()}
        self._last = {key: stats[key] for key in self._last}
        if new["inference_errors"]:
            level, message = ERROR, f"{new['inference_errors']} inference error(s)"
        elif new["deadline_misses"] or new["observations_rejected"]:
            level = WARN
            message = (f"{new['deadline_misses']} deadline miss(es), {new['observations_rejected']} rejected "
                       "observation(s) since the last report")
        else:
            level, message = OK, "ok"
        return Report(level, message, [(key, format_value(value)) for key, value in stats.items()])
