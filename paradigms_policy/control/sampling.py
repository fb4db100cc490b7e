"""The sampler options of the policy node: its `window` and `tolerance` parameters, resolved.

A `window` of 0 and a negative `tolerance` stand for the sampler's own defaults, read from the
keyword defaults of the sampler registered under that name (ParaDiGMS: window 16, tolerance 0.1
in units of each step's noise std; ParaTAA: the whole chain, tolerance 2e-4 as the RMS first-order
residual in normalised action units). Any other value is passed to whichever parallel sampler
runs; the sequential sampler takes none of them. `abandonable` lets a node drop a chunk in flight.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..samplers import get_sampler, is_parallel

WHOLE_CHAIN = "whole chain"  # how a window of None (every state of the chain) is reported


@functools.lru_cache(maxsize=None)
def sampler_defaults(name: str) -> tuple[int | None, float]:
    """(window, tolerance): the keyword defaults of the parallel sampler registered as `name`."""
    parameters = inspect.signature(get_sampler(name)).parameters
    return parameters["window"].default, parameters["tolerance"].default


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler with the options it runs with (window None: the whole chain in one window)."""

    name: str
    window: int | None = None
    tolerance: float | None = None
    fixed_shape: bool = False

    @property
    def parallel(self) -> bool:
        return is_parallel(self.name)

    def options(self) -> dict[str, Any]:
        """Keyword options for `DiffusionPolicy.set_sampler` (the round cap is passed per chunk)."""
        if not self.parallel:
            return {}
        return {"window": self.window, "tolerance": self.tolerance, "fixed_shape": self.fixed_shape}

    def window_text(self) -> str:
        if not self.parallel:
            return "n/a"
        return WHOLE_CHAIN if self.window is None else str(self.window)

    def describe(self) -> str:
        if not self.parallel:
            return self.name
        return f"{self.name} (window {self.window_text()}, tolerance {self.tolerance:g})"


def resolve_sampler(name: str, window: int = 0, tolerance: float = -1.0, fixed_shape: bool = False) -> SamplerChoice:
    """The options `name` runs with: window 0 and a negative tolerance take the sampler's defaults.

    fixed_shape (CUDA): every round evaluates the same number of slots, so the denoiser's CUDA
    graph captured at start-up serves every round.
    """
    if not is_parallel(name):
        get_sampler(name)  # a ValueError for an unknown name
        return SamplerChoice(name)
    default_window, default_tolerance = sampler_defaults(name)
    return SamplerChoice(name, window if window > 0 else default_window,
                         float(tolerance) if tolerance >= 0 else default_tolerance, fixed_shape)


class ChunkAbandoned(Exception):
    """The chunk being computed was dropped: the node is stopping or was deactivated."""


def abandonable(sampler: Callable[..., Any], abandoned: Callable[[], bool]) -> Callable[..., Any]:
    """`sampler` whose denoiser calls raise `ChunkAbandoned` once `abandoned()` is true.

    The samplers call the denoiser once per step (sequential) or per round (parallel), so a chunk
    in flight ends within one network evaluation of the request, with no change to the samplers.
    """
    def run(denoiser, *args, **kwargs):
        def checked(*inputs, **options):
            if abandoned():
                raise ChunkAbandoned()
            return denoiser(*inputs, **options)

        return sampler(checked, *args, **kwargs)

    return run
