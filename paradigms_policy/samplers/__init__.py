"""Samplers by name. Each is `sample(denoiser, scheduler, noise, condition, *, generator, **options)`."""
from __future__ import annotations

from . import paradigms, parataa, sequential
from .base import Denoiser, Sampler, SamplerStats

SAMPLERS: dict[str, Sampler] = {
    "sequential": sequential.sample,
    "paradigms": paradigms.sample,
    "parataa": parataa.sample,
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`, or a ValueError listing the known names."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}") from None


__all__ = ["Denoiser", "Sampler", "SamplerStats", "SAMPLERS", "get_sampler"]
