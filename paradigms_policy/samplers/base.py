"""What every sampler takes and returns.

A sampler is a function

    sample(denoiser, scheduler, noise, condition, *, generator=None, **options) -> (x_0, SamplerStats)

`denoiser(x, timesteps, condition)` predicts the noise for a stack of states `x` of shape
(N, horizon, action_dim), where N is a multiple k of the chunk batch B laid out as k consecutive
copies of the B chunks, and `timesteps` holds one timestep per row (or one for all rows).
`scheduler` is a diffusers scheduler on which `set_timesteps` has been called, `noise` the
initial state x_T (B, horizon, action_dim), and `generator` the torch generator that the
scheduler's own `step()` would draw its per-step noise from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

import torch


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, condition: Any) -> torch.Tensor: ...


@dataclass
class SamplerStats:
    """How a chunk was sampled.

    rounds: sequential denoiser calls (batched calls for parallel samplers).
    model_evals: single-chunk denoiser evaluations (a window of p slots counts p).
    residual: the largest RMS first-order residual r_j = g_j(x_j) - x_{j+1} over the last round's
        window, in normalised action units; 0 for the sequential sampler.
    converged: False when a round cap stopped the solve before every step met the tolerance.
    residual_history: that residual for every round, for convergence plots.
    """

    rounds: int
    model_evals: int
    residual: float = 0.0
    converged: bool = True
    residual_history: list[float] = field(default_factory=list)
    # The solved states x_0..x_T, (T+1, B, ...), from samplers that solve for all of them (warm starts).
    trajectory: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "trajectory"}


Sampler = Callable[..., tuple[torch.Tensor, SamplerStats]]
