"""Samplers by name. Each is `sample(denoiser, scheduler, noise, condition, *, generator, **options)`."""
from __future__ import annotations

from . import paradigms, parataa, sequential
from .base import Denoiser, Sampler, SamplerStats

SAMPLERS: dict[str, Sampler] = {
    "sequential": sequential.sample,
    "paradigms": paradigms.sample,
    "parataa": parataa.sample,
}


# The windowed fixed-point solvers of the same chain. Each takes window, tolerance (in its own units:
# see its module), max_rounds (the deadline's round cap), fixed_shape (CUDA graphs) and
# init_trajectory (warm starts); the sequential sampler takes none of these.
PARALLEL_SAMPLERS = ("paradigms", "parataa")


def is_parallel(name: str) -> bool:
    """Whether the sampler registered as `name` is a windowed parallel solver (see PARALLEL_SAMPLERS)."""
    return name in PARALLEL_SAMPLERS


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`, or a ValueError listing the known names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


__all__ = ["Denoiser", "Sampler", "SamplerStats", "SAMPLERS", "PARALLEL_SAMPLERS", "get_sampler", "is_parallel"]
