"""Timing of action chunks: which actions of a chunk are still due, deadlines, round caps.

Timing conventions (all times are integer nanoseconds on the node's clock):

- An observation stamped `s` is the state at time `s`. The policy's chunk starts at the newest
  observation's step, as in Diffusion Policy: action k (k = 0 .. n_action_steps - 1) is the
  command due at `s + k * period`, with `period = 1 / control_rate`.
- A chunk whose inference finished at time `r` keeps only the actions due at or after `r`; the
  earlier ones are outdated and dropped (action 0 always is, since `r > s`).
- The published trajectory's `header.stamp` is the due time of the first kept action; point j has
  `time_from_start = j * period` (strictly increasing by one period).
- Deadline: the chunk for an observation stamped `s` must be ready by `s + deadline`; a chunk that
  is ready later is a deadline miss and is not published at all.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def seconds_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


def period_ns(control_rate_hz: float) -> int:
    """The control period in nanoseconds (rounded to the nanosecond)."""
    if not control_rate_hz > 0 or not math.isfinite(control_rate_hz):
        raise ValueError(f"control rate must be a positive number of Hz (got {control_rate_hz!r})")
    return int(round(NS_PER_S / control_rate_hz))


# ----------------------------------------------------------------------------------------------
# Chunk -> timed trajectory


@dataclass(frozen=True)
class TimedChunk:
    """The part of a chunk that is still to come, with its timing.

    start_ns: due time of the first kept action (the trajectory's header.stamp).
    period_ns: spacing of the points (time_from_start of point j = j * period_ns).
    positions: (n_kept, action_dim) float64, clipped to the bounds.
    first_index: index, in the chunk, of the first kept action.
    dropped: actions dropped because they were already due when the chunk was ready.
    clipped: number of action values that were outside the bounds.
    """

    start_ns: int
    period_ns: int
    positions: np.ndarray
    first_index: int
    dropped: int
    clipped: int = 0

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def end_ns(self) -> int:
        """Due time of the last kept action."""
        return self.start_ns + (len(self.positions) - 1) * self.period_ns

    def times_from_start_ns(self) -> list[int]:
        return [j * self.period_ns for j in range(len(self.positions))]

    def due_times_ns(self) -> list[int]:
        return [self.start_ns + t for t in self.times_from_start_ns()]


def first_due_index(obs_stamp_ns: int, ready_ns: int, period: int) -> int:
    """Index of the first action due at or after `ready_ns` (action k is due at stamp + k * period)."""
    if period <= 0:
        raise ValueError("period must be positive")
    late = ready_ns - obs_stamp_ns
    return 0 if late <= 0 else -(-late // period)


def plan_chunk(actions, obs_stamp_ns: int, ready_ns: int, period: int,
               low: Sequence[float] | None = None, high: Sequence[float] | None = None) -> TimedChunk | None:
    """Drop the outdated actions of a chunk, clip the rest to [low, high] and time them.

    Returns None when every action is outdated (nothing may be published).
    """
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"actions must be a non-empty (n, action_dim) array, got shape {actions.shape}")
    first = first_due_index(obs_stamp_ns, ready_ns, period)
    if first >= len(actions):
        return None
    kept = actions[first:]
    clipped = 0
    if low is not None or high is not None:
        lo = np.full(kept.shape[1], -np.inf) if low is None else np.asarray(low, dtype=np.float64)
        hi = np.full(kept.shape[1], np.inf) if high is None else np.asarray(high, dtype=np.float64)
        clipped = int(np.count_nonzero((kept < lo) | (kept > hi)))
        kept = np.clip(kept, lo, hi)
    return TimedChunk(obs_stamp_ns + first * period, period, kept, first, first, clipped)


def deadline_met(obs_stamp_ns: int, ready_ns: int, deadline_ns: int) -> bool:
    """True when a chunk ready at `ready_ns` meets the deadline of the observation stamped `obs_stamp_ns`."""
    return ready_ns <= obs_stamp_ns + deadline_ns


def should_start_inference(newest_stamp_ns: int, chunk_end_ns: int | None, period: int, lead_ns: int,
                           plan_ahead_periods: int = 1) -> bool:
    """Whether to plan now for the newest observation or wait for the next one.

    A chunk planned now arrives about `lead_ns` after the observation; one planned from the next
    observation arrives a period later. The running chunk's last action (due at `chunk_end_ns`)
    holds until `chunk_end_ns + period`. Waiting is fine while the later chunk would still arrive
    `plan_ahead_periods` periods before that: start now when
    `newest + period + lead + plan_ahead_periods * period > chunk_end + period`.
    `plan_ahead_periods` = 1 keeps one period of margin for timing jitter; 0 plans as late as
    possible, which reproduces Diffusion Policy's execution (every action of a chunk, then a new
    one) when inference costs no time on the node's clock (a lockstep simulation).
    With no chunk running, start now.
    """
    if chunk_end_ns is None:
        return True
    return newest_stamp_ns + max(0, lead_ns) + plan_ahead_periods * period > chunk_end_ns


def deadline_margin_ns(deadline_ns: int) -> int:
    """Safety margin kept free when capping rounds: 10% of the deadline, at least 2 ms."""
    return max(2 * NS_PER_MS, deadline_ns // 10)


def auto_round_cap(budget_ns: int, seconds_per_round: float | None, deadline_ns: int) -> int | None:
    """Most rounds that fit in the remaining budget, minus the safety margin.

    None when there is no per-round estimate yet (no cap); 0 when not even one round fits.
    """
    if seconds_per_round is None or seconds_per_round <= 0:
        return None
    per_round = max(1, seconds_to_ns(seconds_per_round))
    usable = budget_ns - deadline_margin_ns(deadline_ns)
    return max(0, usable // per_round)


def combine_caps(*caps: int | None) -> int | None:
    """The smallest of the given caps; None entries mean "no cap"."""
    values = [c for c in caps if c is not None]
    return min(values) if values else None




@dataclass(frozen=True)
class RoundPlan:
    """The round cap of the next inference, or why it is skipped (a deadline miss of kind no_time)."""

    cap: int | None = None  # max_rounds for a parallel sampler; None = uncapped
    skip: str = ""  # empty: run the inference


def plan_rounds(parallel: bool, fixed_cap: int, auto: bool, budget_ns: int, seconds_per_round: float | None,
                deadline_ns: int) -> RoundPlan:
    """The round cap for a chunk with `budget_ns` left until its deadline.

    A parallel sampler is capped at min(fixed_cap if > 0, the rounds that fit with `auto`); with
    `auto` it is skipped when not one round fits. The sequential sampler cannot be capped: it is
    skipped only when the deadline has already passed.
    """
    if not parallel:
        return RoundPlan(skip="" if budget_ns > 0 else "the deadline passed before the inference could start")
    cap = fixed_cap or None
    if auto:
        fitting = auto_round_cap(budget_ns, seconds_per_round, deadline_ns)
        if fitting == 0 or budget_ns <= 0:
            return RoundPlan(skip=f"only {budget_ns / NS_PER_MS:.1f} ms left before the deadline, not enough "
                                  "for one round")
        cap = combine_caps(cap, fitting)
    return RoundPlan(cap)
