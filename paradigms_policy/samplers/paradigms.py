"""ParaDiGMS: Picard iteration over a sliding window (Shih et al., NeurIPS 2023).

The chain x_{i+1} = f_i(x_i) + n_i (see `chain.py`) is solved for all states at once. Each round
evaluates the denoiser on the p states of the window [s, s+p) in one batched call and updates

    x_{s+k+1} <- x_s + sum_{j<=k} (f_{s+j}(x_{s+j}) + n_{s+j} - x_{s+j}),     k = 0 .. p-1,

written here in the equivalent residual form x_{s+k+1} <- f_{s+k} + n_{s+k} + sum_{j<k} r_j with
r_j = f_{s+j} + n_{s+j} - x_{s+j+1}: once the residuals vanish the update is exactly the
sequential step, so window 1 or tolerance 0 reproduces the sequential sampler.

A state has converged when its change in the round, ||dx||^2 / (D sigma_i^2), is at most tau^2
(D = elements per chunk, sigma_i^2 the step's DDPM variance; every chunk of the batch must
pass). The window then slides to the first state that has not converged, by at least one step,
so at most T rounds are needed; newly exposed slots start from the last computed state.
"""
from __future__ import annotations

import math

import torch

from .base import Denoiser, SamplerStats
from .chain import DenoisingChain

DEFAULT_WINDOW = 16
DEFAULT_TOLERANCE = 0.1


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler, noise: torch.Tensor, condition, *,
           generator: torch.Generator | None = None, window: int = DEFAULT_WINDOW,
           tolerance: float = DEFAULT_TOLERANCE, max_rounds: int | None = None, fixed_shape: bool = False,
           init_trajectory: torch.Tensor | None = None) -> tuple[torch.Tensor, SamplerStats]:
    """Solve the sampling chain by windowed Picard iteration.

    window: p, the number of states evaluated per round (batch p x B).
    tolerance: tau, in units of each step's noise standard deviation.
    max_rounds: stop after this many rounds (a deadline); the result is then the last state if
        the window has reached the end of the chain, else the denoiser's clean-sample estimate
        at the furthest state, and `stats.converged` is False.
    fixed_shape: always evaluate exactly p slots, padding past the end of the chain with
        identity steps, so one captured graph serves every round.
    init_trajectory: (T+1, B, ...) initial guess of every state (a warm start); its first state
        is replaced by `noise`. Default: every state starts as `noise`.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 (got {window})")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0 (got {tolerance})")
    if max_rounds is not None and max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1 (got {max_rounds})")

    chain = DenoisingChain.cached(scheduler, noise.device, noise.dtype)
    steps_total = chain.num_steps
    noise_terms = chain.draw_noise(noise.shape, generator, noise.device, noise.dtype)
    width = window if fixed_shape else min(window, steps_total)
    if fixed_shape:
        chain = chain.padded(width)
        noise_terms = torch.cat([noise_terms, noise_terms.new_zeros((width, *noise.shape))])
    batch, chunk_shape = noise.shape[0], noise.shape[1:]
    elements = math.prod(chunk_shape)
    trajectory = noise.new_empty((chain.num_steps + 1, *noise.shape))
    warm = init_trajectory is not None
    if warm:
        if init_trajectory.shape != (steps_total + 1, *noise.shape):
            raise ValueError(f"init_trajectory must be {(steps_total + 1, *noise.shape)}, got {tuple(init_trajectory.shape)}")
        trajectory[: steps_total + 1] = init_trajectory
        trajectory[steps_total + 1:] = init_trajectory[-1]
        trajectory[0] = noise
    else:
        trajectory[:] = noise

    threshold = tolerance**2
    start = rounds = evals = 0
    history: list[float] = []
    while start < steps_total and (max_rounds is None or rounds < max_rounds):
        slots = width if fixed_shape else min(width, steps_total - start)
        valid = min(slots, steps_total - start)
        steps = torch.arange(start, start + slots, device=noise.device)
        states = trajectory[start:start + slots]
        eps = denoiser(states.reshape(slots * batch, *chunk_shape),
                       chain.timesteps[steps].repeat_interleave(batch), condition).reshape(states.shape)
        if max_rounds is not None and rounds + 1 == max_rounds:
            # The deadline answer if the window does not reach the end: the clean-sample estimate at
            # the furthest state, taken before this round overwrites that state.
            furthest = steps[valid - 1:valid]
            estimate = chain.predicted_clean(states[valid - 1:valid], eps[valid - 1:valid], furthest)[0]
        proposal = chain.mean_step(states, eps, steps) + noise_terms[start:start + slots]
        residual = proposal - trajectory[start + 1:start + slots + 1]
        change = residual.cumsum(0)
        earlier = torch.cat([torch.zeros_like(change[:1]), change[:-1]])
        trajectory[start + 1:start + slots + 1] = proposal + earlier

        mean_square = change[:valid].reshape(valid, batch, -1).square().sum(-1) / elements
        worst = (mean_square / chain.variance[steps[:valid], None]).amax(1)
        failing = (worst > threshold).nonzero()
        advance = valid if failing.numel() == 0 else min(int(failing[0]) + 1, valid)
        rounds += 1
        evals += slots
        history.append(math.sqrt(float(mean_square.max())))

        computed_end = start + valid
        start += advance
        exposed_end = min(start + width, steps_total)
        if not warm and exposed_end > computed_end:
            trajectory[computed_end + 1:exposed_end + 1] = trajectory[computed_end]

    converged = start >= steps_total
    result = trajectory[steps_total] if converged or computed_end >= steps_total else estimate
    return result, SamplerStats(rounds=rounds, model_evals=evals, residual=history[-1] if history else 0.0,
                                converged=converged, residual_history=history,
                                trajectory=trajectory[:steps_total + 1])
