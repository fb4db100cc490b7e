"""Real-time chunking in the node: what the running trajectory commits while the next chunk is computed.

A chunk planned from the observation stamped s arrives about `delay` control periods later. Until
then the running trajectory keeps commanding; real-time chunking inpaints those commands, and the
one due just before s, into the new chunk (`samplers/inpainting.py`), so the new trajectory
continues the old one where it takes over. With a soft or guided overlap the running chunk's
prediction after those commands (the part of its horizon not yet executed, or never published)
is used too (`DiffusionPolicy.commitment`).
"""
from __future__ import annotations

import math

import numpy as np

from .timing import TimedChunk

# Periods added to the measured observation-to-ready time when choosing the delay: jitter room.
MARGIN_STEPS = 1


def planned_delay_steps(expected_ready_ns: int, period: int, most: int, margin_steps: int = MARGIN_STEPS) -> int:
    """Control periods from an observation's stamp until its chunk is expected, rounded up, plus a margin (<= most)."""
    return min(most, max(0, math.ceil(expected_ready_ns / period)) + margin_steps)


def committed_actions(running: TimedChunk | None, stamp_ns: int, period: int, delay_steps: int) -> np.ndarray | None:
    """(delay_steps + 1, action_dim): what `running` commands at stamp - period, stamp, ..., stamp + (delay_steps - 1)
    period; None without a trajectory that still runs at stamp - period (after a pause, such as an episode's
    reset, the new chunk starts afresh). Before its first point that point stands in (the older chunk's command
    is not kept); after its last point the last one is held, as the controller holds it."""
    if running is None or running.end_ns < stamp_ns - period:
        return None
    times = stamp_ns + period * np.arange(-1, delay_steps)
    index = np.clip(np.round((times - running.start_ns) / period).astype(int), 0, len(running) - 1)
    return running.positions[index]


def overlap_actions(prediction: TimedChunk | None, stamp_ns: int, period: int, delay_steps: int) -> np.ndarray | None:
    """What `prediction` (the running chunk's whole predicted horizon, timed) has for stamp + delay_steps periods
    on, the steps after those `committed_actions` returns, (m, action_dim), possibly empty; None without one."""
    if prediction is None:
        return None
    first = round((stamp_ns + delay_steps * period - prediction.start_ns) / period)
    return prediction.positions[max(first, 0):]
